"""``durable_wait_replicas`` on a cluster: a step counts once the replica of its master has it.

``WAIT`` waits for the writes of its own connection: sent on another connection than
the script's, it returns at once and a write no replica has would count as durable.
These tests stop the replica of the invocation's master (SIGSTOP) so that only a
``WAIT`` on the script's own connection can notice.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.connection

from celery_durable import ConfigurationError, JournalUnavailableError
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.system

ENTRY = '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}'


@pytest.fixture
def keys(redis_cluster: LocalCluster) -> Iterator[KeySpace]:
    prefix = f"cd-{uuid.uuid4().hex[:12]}"
    yield KeySpace(prefix, cluster=True)
    redis_cluster.delete_prefix(prefix)


def store_on(cluster: LocalCluster, keys: KeySpace, replicas: int) -> RedisJournalStore:
    durability = Durability(replicas=replicas, timeout=0.5)
    return RedisJournalStore.from_url(cluster.url, keys, durability=durability)


def started(store: RedisJournalStore, task_id: str) -> int:
    reply = store.start(task_id, StartRequest("shop.checkout", "fp", 1, 30.0, "host:1"))
    assert reply.state == "run", reply
    return reply.fence


def test_a_step_counts_once_the_replica_of_its_master_has_it_in_one_round_trip(
    redis_cluster: LocalCluster, keys: KeySpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_on(redis_cluster, keys, replicas=1)
    try:
        fence = started(store, "inv")
        sent: list[tuple[int, bytes]] = []
        send = redis.connection.AbstractConnection.send_packed_command

        def recording(conn: Any, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, bytes) else command
            sent.append((id(conn), b"".join(chunks)))
            send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", recording)
        assert store.append("inv", fence, 0, ENTRY, False) is None
        monkeypatch.undo()
        # One write on one connection: the script, then WAIT for that connection's writes.
        assert len(sent) == 1, sent
        assert sent[0][1].index(b"EVALSHA") < sent[0][1].index(b"WAIT")
        replica = redis_cluster.replicas_of(redis_cluster.master_of_slot(keys.slot("inv")))[0]
        reader = redis.Redis(port=replica.port, single_connection_client=True)
        reader.execute_command("READONLY")  # a cluster replica serves reads only after it
        assert reader.llen(keys.invocation("inv").journal) == 1
        reader.close()
    finally:
        store.close()


def test_a_step_its_masters_replica_did_not_acknowledge_is_not_durable(
    redis_cluster: LocalCluster, keys: KeySpace
) -> None:
    store = store_on(redis_cluster, keys, replicas=1)
    fence = started(store, "inv")
    replica = redis_cluster.replicas_of(redis_cluster.master_of_slot(keys.slot("inv")))[0]
    replica_pid = redis_cluster.processes[replica.port].pid
    os.kill(replica_pid, signal.SIGSTOP)  # it cannot acknowledge anything now
    try:
        with pytest.raises(JournalUnavailableError, match="0 of durable_wait_replicas=1"):
            store.append("inv", fence, 0, ENTRY, False)
        # The master has the entry: the next execution will find it and replay the step.
        stored = store.read("inv")
        assert stored is not None and len(stored[1]) == 1
    finally:
        os.kill(replica_pid, signal.SIGCONT)
        store.close()


def test_every_primary_needs_the_replicas_at_worker_start(
    redis_cluster: LocalCluster, keys: KeySpace
) -> None:
    store = store_on(redis_cluster, keys, replicas=1)
    try:
        assert store.check_replicas(1) is None  # each of the three has its replica
        with pytest.raises(ConfigurationError, match=r"durable_wait_replicas=2, .* has 1"):
            store.check_replicas(2)
    finally:
        store.close()
