"""The journal store contract (``tests/contract``) on a real three-master Redis Cluster.

The contract's test functions are imported as they are; this module's ``store`` fixture
gives them a ``RedisJournalStore`` on the cluster (``KeySpace(cluster=True)``), so every
script runs there and must touch one hash slot only. A script that touched two would
fail with CROSSSLOT (from Redis), or "all keys must map to the same key slot" (from
redis-py's cluster client, before sending). The contract's own ids spread the
invocations: ``a``, ``b`` and ``c`` live on three different masters.

The cluster-only keys are checked below the imports: the per-slot indexes beside their
invocation, the set of slots in use, and wake-ups fed into the one set workers claim.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from celery_durable.errors import JournalError
from celery_durable.journal.store import StartRequest
from celery_durable.keys import InvocationKeys, KeySpace
from celery_durable.stores.redis import RedisJournalStore
from tests.cluster.cluster import LocalCluster
from tests.contract.test_flow_contract import *  # noqa: F403
from tests.contract.test_operator_contract import *  # noqa: F403
from tests.contract.test_recovery_contract import *  # noqa: F403
from tests.contract.test_store_contract import *  # noqa: F403
from tests.contract.test_unreadable_contract import *  # noqa: F403
from tests.processes import wait_for

pytestmark = pytest.mark.system


@pytest.fixture
def cluster_prefix(redis_cluster: LocalCluster) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted on every master afterwards."""
    prefix = f"c-{uuid.uuid4().hex[:12]}"
    yield prefix
    redis_cluster.delete_prefix(prefix)


@pytest.fixture
def store(redis_cluster: LocalCluster, cluster_prefix: str) -> Iterator[RedisJournalStore]:
    """The Redis store on the cluster, through the URL of one of its nodes."""
    cluster_store = RedisJournalStore.from_url(
        redis_cluster.url, KeySpace(cluster_prefix, cluster=True)
    )
    yield cluster_store
    cluster_store.close()


# -- What only a cluster has --------------------------------------------------------------

IDS = ("a", "b", "c")


def _start(store: RedisJournalStore, task_id: str) -> int:
    started = store.start(task_id, StartRequest("shop.checkout", "fp", 11, 30.0, "host:1"))
    assert started.state == "run", started
    return started.fence


def test_the_contracts_ids_spread_over_three_masters(redis_cluster: LocalCluster) -> None:
    masters = {redis_cluster.master_of_slot(KeySpace("x").slot(i)).node_id for i in IDS}
    assert len(masters) == 3


def test_an_invocations_keys_and_indexes_share_its_slot_and_its_master(
    store: RedisJournalStore, redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    keys = KeySpace(cluster_prefix, cluster=True)
    for task_id in IDS:
        fence = _start(store, task_id)
        store.append(task_id, fence, 0, '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}', False)
        slot = keys.slot(task_id)
        # Redis agrees with the library on the slot of every key the scripts touch.
        every = [
            keys.invocation(task_id).meta,
            keys.invocation(task_id).journal,
            keys.invocation(task_id).done,
            *keys.indexes(task_id),
            keys.wakeups_of(task_id),
        ]
        assert {redis_cluster.key_slot(key) for key in every} == {slot}
        master = redis_cluster.master_of_slot(slot)
        node = redis_cluster.client(master.port)
        try:
            assert node.zscore(keys.indexes(task_id).running, task_id) is not None
            assert node.exists(keys.invocation(task_id).meta) == 1
        finally:
            node.close()
    slots = {int(s) for s in store.client.smembers(keys.slots_in_use)}
    assert slots == {keys.slot(task_id) for task_id in IDS}
    assert sorted(store.list_ids("running", 10)) == sorted(IDS)


def test_a_timer_of_any_slot_is_claimed_from_the_one_wakeups_set(
    store: RedisJournalStore, cluster_prefix: str
) -> None:
    keys = KeySpace(cluster_prefix, cluster=True)
    # Due late enough that the last of the three suspends comes before it, under load too
    # (a timer already due makes the suspension 'ready').
    due = time.time() + 2.0
    for task_id in IDS:
        assert store.suspend(task_id, _start(store, task_id), "[]", [], due, "{}") == "suspended"
        assert store.client.zscore(keys.wakeups_of(task_id), task_id) is not None
    assert sorted(store.client.zrange(keys.wakeups, 0, -1)) == sorted(IDS)
    claimed: list[tuple[str, str]] = []

    def all_claimed() -> bool:
        claimed.extend(store.claim_wakeups(10, 30)[0])  # each once: a claim hides it
        return len(claimed) == len(IDS)

    wait_for(all_claimed, "the three timers to come due", timeout=10)
    assert time.time() >= due
    assert sorted(task_id for task_id, _ in claimed) == sorted(IDS)
    for task_id, claim in claimed:
        store.ack_wakeup(task_id, claim)
    assert store.claim_wakeups(10, 30) == ([], -1.0)


#: Task ids whose braces would give their keys no hash tag, or an unexpected one.
BRACED_IDS = ("}", "}x{y}", "", "{}", "a}b", "{", "}{}")


def test_an_id_of_any_braces_keeps_its_keys_in_one_slot(
    store: RedisJournalStore, redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    keys = KeySpace(cluster_prefix, cluster=True)
    entry = '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}'
    for task_id in BRACED_IDS:
        invocation = keys.invocation(task_id)
        every = [invocation.meta, invocation.journal, invocation.done, *keys.indexes(task_id)]
        # Redis agrees: one slot, the one the library computes.
        assert {redis_cluster.key_slot(key) for key in every} == {keys.slot(task_id)}, task_id
        fence = _start(store, task_id)
        store.append(task_id, fence, 0, entry, False)
        store.finish(task_id, fence, "completed", '{"s":"ok","v":2}', 60.0, call="{}")
        found = store.read(task_id)
        assert found is not None, task_id
        assert found[0]["status"] == "completed" and found[1] == [entry]
        assert store.forget(task_id)
        assert store.read(task_id) is None


def test_keys_in_several_slots_are_a_journal_error_not_a_raw_one(
    redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    class SpreadKeys(KeySpace):
        """The shape every id had before: ``}x`` gives each key a slot of its own."""

        def invocation(self, task_id: str) -> InvocationKeys:
            base = f"{self.prefix}:{{{task_id}}}:"
            return InvocationKeys(
                meta=base + "meta", journal=base + "journal", done=base + "done",
                call=base + "call", steps=base + "steps", tombstone=base + "tombstone",
            )  # fmt: skip

    spread = RedisJournalStore.from_url(redis_cluster.url, SpreadKeys(cluster_prefix, cluster=True))
    try:
        with pytest.raises(JournalError, match="}x"):
            spread.start("}x", StartRequest("shop.checkout", "fp", 11, 30.0, "host:1"))
    finally:
        spread.close()


def test_recovery_finds_and_claims_lost_invocations_on_every_master(
    store: RedisJournalStore,
) -> None:
    after = 0.2
    for task_id in IDS:
        request = StartRequest(
            "shop.checkout", "fp", 11, 0.05, "gone:1", call=f'{{"id":"{task_id}"}}'
        )
        assert store.start(task_id, request).state == "run"
    time.sleep(0.05 + after + 0.1)
    # The sweep's candidates come from every slot's running index, oldest first...
    lost = store.list_ids_before("running", time.time() - after, 10)
    assert lost == list(IDS)
    # ...and one pipeline claims each on its own master.
    assert store.recover(lost, after) == [f'{{"id":"{task_id}"}}' for task_id in IDS]
    assert store.recover(lost, after) == [None, None, None]
    assert store.take_recovery_turn(5)
    assert not store.take_recovery_turn(5)
