"""The store contract of a completed invocation's steps handed to ``finish`` (``entries``):
whatever form a store keeps them in (the Redis store packs them with the call into one
key), every reader sees the same journal, call, completions and step count, and a
paused, resumed, forked or forgotten invocation behaves as an unpacked one."""

from __future__ import annotations

import time

import pytest

from celery_durable.errors import JournalError
from celery_durable.journal.store import Fork, JournalStore, StartRequest
from celery_durable.keys import MetaField as F
from celery_durable.stores.redis import RedisJournalStore, scripts
from tests.conftest import SERVERS
from tests.contract.test_operator_contract import CALL, journal, meta, ok, run

#: Only the Redis store packs: these run on each server it supports, not on the memory store.
REDIS_ONLY = pytest.mark.parametrize("server_kind", [*SERVERS, "redis-acl"], indirect=True)

OK_OUTCOME = '{"s":"ok","v":3}'
STEPS = 10


def completed(
    store: JournalStore,
    task_id: str = "inv",
    steps: int = STEPS,
    journal_retention: float = 60,
    held_call: str = CALL,
) -> list[str]:
    """A completed invocation of ``steps`` entries, finished with them in hand."""
    started = run(store, task_id)
    entries = [ok(i) for i in range(steps)]
    for i, entry in enumerate(entries):
        store.append(task_id, started.fence, i, entry, False)
    store.mark_sent(task_id, started.fence, 0)  # something in the completions hash
    assert store.finish(
        task_id, started.fence, "completed", OK_OUTCOME, 60, entries=entries,
        journal_retention=journal_retention, held_call=held_call,
    ) is None  # fmt: skip
    return entries


def keys_of(store: JournalStore, task_id: str = "inv") -> set[str]:
    """The kinds of key an invocation has in Redis (empty for the memory store)."""
    if not isinstance(store, RedisJournalStore):
        return set()
    k = store._keys.invocation(task_id)
    kinds = {"meta": k.meta, "journal": k.journal, "done": k.done, "call": k.call,
             "steps": k.steps}  # fmt: skip
    return {kind for kind, key in kinds.items() if store.client.exists(key)}


def test_every_reader_sees_the_steps_of_a_completed_invocation(store: JournalStore) -> None:
    entries = completed(store)
    found = store.read("inv")
    assert found is not None
    stored, read, completions = found
    assert read == entries
    assert (stored[F.STATUS], stored[F.OUTCOME], stored[F.CALL]) == (
        "completed", OK_OUTCOME, CALL,
    )  # fmt: skip
    assert stored[F.SEED] == "11"  # a restart replays them with it
    assert F.PACKED not in stored  # how a store keeps them is its own business
    assert completions == {"0:sent": "1"}
    assert store.completions("inv") == {"0:sent": "1"}
    summary = store.summaries(["inv"])[0]
    assert summary is not None
    assert (summary[0][F.STATUS], summary[1]) == ("completed", STEPS)
    assert F.PACKED not in summary[0]
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "done", "steps"}
    # A later delivery of the same id gets the outcome, not the steps.
    again = store.start("inv", StartRequest("shop.checkout", "fp", 11, 30.0, "host:2"))
    assert (again.state, again.status, again.outcome) == ("done", "completed", OK_OUTCOME)


def test_the_stored_call_is_kept_whatever_call_the_finisher_holds(store: JournalStore) -> None:
    # A wake-up re-publishes the stored call: the request the finisher runs under can
    # have other options. What a restart publishes is the stored call.
    entries = completed(store, held_call=CALL.replace("o-1", "o-2"))
    assert (journal(store), meta(store)[F.CALL]) == (entries, CALL)
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "done", "steps"}
        value = store.client.execute_command(
            "GET", store._keys.invocation("inv").steps, NEVER_DECODE=[]
        )
        assert value[:1] == b"\x01"  # the call apart, as stored
    completed(store, "other")
    if isinstance(store, RedisJournalStore):
        value = store.client.execute_command(
            "GET", store._keys.invocation("other").steps, NEVER_DECODE=[]
        )
        assert value[:1] == b"\x02"  # the same call: compressed with the entries
        assert CALL.encode() not in value


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_only_a_completed_invocation_is_packed(store: JournalStore, status: str) -> None:
    # A failed one can be resumed: resume.lua reads and trims its journal in Lua.
    started = run(store)
    entries = [ok(i) for i in range(STEPS)]
    for i, entry in enumerate(entries):
        store.append("inv", started.fence, i, entry, False)
    store.finish("inv", started.fence, status, OK_OUTCOME, 60, entries=entries)
    assert journal(store) == entries
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "journal", "call"}


def test_a_journal_that_changed_since_the_finisher_read_it_is_kept(store: JournalStore) -> None:
    started = run(store)
    entries = [ok(i) for i in range(STEPS)]
    for i, entry in enumerate(entries):
        store.append("inv", started.fence, i, entry, False)
    # The finisher holds one entry fewer than the journal: packing them would lose one.
    store.finish("inv", started.fence, "completed", OK_OUTCOME, 60, entries=entries[:-1])
    assert journal(store) == entries
    assert summary_steps(store) == STEPS
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "journal", "call"}


def summary_steps(store: JournalStore) -> int:
    summary = store.summaries(["inv"])[0]
    assert summary is not None
    return summary[1]


def test_a_journal_that_would_not_shrink_is_kept(store: JournalStore) -> None:
    started = run(store)
    entries = ["{}"]  # deflate's own bytes are more than that
    store.append("inv", started.fence, 0, entries[0], False)
    store.finish("inv", started.fence, "completed", OK_OUTCOME, 60, entries=entries)
    assert journal(store) == entries
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "journal", "call"}
        assert meta(store)[F.SEED] == "11"


def test_a_packed_invocation_forks_from_what_it_read(store: JournalStore) -> None:
    entries = completed(store)
    stored, read, _ = store.read("inv") or ({}, [], {})
    fork = Fork("shop.checkout", stored[F.FINGERPRINT], int(stored[F.SEED]), read[:4],
                {}, CALL, "restarted")  # fmt: skip
    assert store.fork("inv-2", fork)
    assert journal(store, "inv-2") == entries[:4]
    assert meta(store, "inv-2")[F.CALL] == CALL


def test_a_packed_invocation_paused_for_its_outcome_gets_its_journal_back(
    store: JournalStore, server_kind: str
) -> None:
    entries = completed(store)
    assert store.pause_finished("inv", "completed", OK_OUTCOME, "unreadable") == "paused"
    assert journal(store) == entries
    assert (meta(store)[F.CALL], meta(store)[F.SEED]) == (CALL, "11")
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "done", "journal", "call"}
        assert store.client.hget(store._keys.invocation("inv").meta, F.SEED) == "11"
        if server_kind != "redis-acl":  # the documented ACL has no PTTL
            k = store._keys.invocation("inv")
            assert store.client.pttl(k.journal) == -1  # kept until an operator acts
    # Resumed, its next start replays every step from its journal.
    assert store.resume("inv", "resumed").state == "resumed"
    again = store.start("inv", StartRequest("shop.checkout", "fp", 11, 30.0, "host:2"))
    assert (again.state, again.entries) == ("run", entries)


@REDIS_ONLY
def test_a_pause_of_a_packed_invocation_that_changed_since_does_nothing(
    store: JournalStore,
) -> None:
    assert isinstance(store, RedisJournalStore)
    completed(store)
    k = store._keys.invocation("inv")
    ix = store._keys.indexes("inv")
    # What a caller passes when the pack it read and unpacked is not the one there now.
    status = store._eval(
        scripts.PAUSE_FINISHED, 7, k.meta, k.journal, k.done, ix.all, ix.paused, k.call,
        k.steps, "inv", "completed", OK_OUTCOME, "unreadable", 0, "0" * 40, "11", CALL, ok(0),
    )  # fmt: skip
    assert status == "completed"  # nothing changed
    assert meta(store)[F.STATUS] == "completed"
    assert keys_of(store) == {"meta", "done", "steps"}
    assert journal(store) == [ok(i) for i in range(STEPS)]


def test_packed_steps_expire_with_the_journal_retention(store: JournalStore) -> None:
    completed(store, journal_retention=0.2)
    assert summary_steps(store) == STEPS
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta", "done", "steps"}
    time.sleep(0.35)
    found = store.read("inv")
    assert found is not None
    assert (found[1], found[0][F.OUTCOME]) == ([], OK_OUTCOME)
    assert F.CALL not in found[0]
    assert summary_steps(store) == 0  # none left to count
    if isinstance(store, RedisJournalStore):
        assert keys_of(store) == {"meta"}


@REDIS_ONLY
def test_packed_steps_that_cannot_be_read_are_a_journal_error(store: JournalStore) -> None:
    assert isinstance(store, RedisJournalStore)
    completed(store)
    store.client.set(store._keys.invocation("inv").steps, b"\x02" + b"garbage")
    with pytest.raises(JournalError, match=r"packed steps of invocation inv .* unreadable"):
        store.read("inv")


def test_forget_deletes_the_packed_steps(store: JournalStore) -> None:
    completed(store)
    assert store.forget("inv")
    assert store.read("inv") is None
    assert keys_of(store) == set()
