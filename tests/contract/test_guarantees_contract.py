"""The store contract of the guarantees every write relies on: paused means paused, no
write to an invocation that no longer runs, and fences that only go up for a task id."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from celery_durable.errors import LeaseLost
from celery_durable.journal.store import Fork, JournalStore, Started, StartRequest
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore

ENTRY = '{"k":"run","n":"s%d","t":0,"d":0,"s":"ok","v":%d}'
CALL_ENTRY = '{"k":"call","n":"child","t":0,"d":0,"s":"ok","v":{"id":"inv/0","task":"t"}}'
OUTCOME = '{"s":"ok","v":1}'
CALL = '{"task":"shop.checkout","args":[],"kwargs":{},"options":{"task_id":"inv"}}'


def request(holder: str = "host:1", nesting: int = 0, ttl: float = 30.0) -> StartRequest:
    return StartRequest("shop.checkout", "fp", 11, ttl, holder, nesting=nesting, call=CALL)


def run(store: JournalStore, task_id: str = "inv", **options: object) -> Started:
    started = store.start(task_id, request(**options))  # type: ignore[arg-type]
    assert started.state == "run", started
    return started


def entry(i: int) -> str:
    return ENTRY % (i, i)


def stored(store: JournalStore, task_id: str = "inv") -> tuple[dict[str, str], list[str], dict]:  # type: ignore[type-arg]
    found = store.read(task_id)
    assert found is not None
    return found


def set_fence(store: JournalStore, task_id: str, fence: int) -> None:
    """Make the stored fence ``fence``: as if earlier starts had run ahead of the clock
    (several in one millisecond), or the clock had been set back since."""
    if isinstance(store, RedisJournalStore):
        meta = store._keys.invocation(task_id).meta
        store.client.hset(meta, "fence", fence)
    else:
        assert isinstance(store, MemoryJournalStore)
        store.meta[task_id]["fence"] = str(fence)


# -- Paused means paused ------------------------------------------------------------------


def test_a_paused_invocation_runs_only_once_an_operator_released_it(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, entry(0), False)
    assert store.pause("inv", started.fence, "exhausted", CALL) == "paused"
    before = store.read("inv")

    again = store.start("inv", request(holder="host:2"))  # a duplicate, a restored message
    assert (again.state, again.status) == ("paused", "paused")
    assert store.read("inv") == before  # no lease, no fence, no death: nothing changed

    assert store.resume("inv", "resumed by an operator").state == "resumed"
    resumed = run(store, holder="host:3")
    assert (resumed.status, resumed.entries, resumed.deaths) == ("paused", [entry(0)], 0)
    meta, _, _ = stored(store)
    assert (meta["status"], meta["lease"], "released" in meta) == ("running", "host:3", False)

    # The release was consumed: a pause by the resumed execution holds again.
    assert store.pause("inv", resumed.fence, "exhausted again") == "paused"
    assert store.start("inv", request(holder="host:4")).state == "paused"


def test_a_fork_runs_at_its_first_start_only(store: JournalStore) -> None:
    fork = Fork("shop.checkout", "fp", 11, [entry(0)], {}, CALL, "restarted from inv")
    assert store.fork("copy", fork)
    first = run(store, "copy")  # the operator's restart released it
    assert (first.status, first.entries) == ("paused", [entry(0)])
    store.pause("copy", first.fence, "paused again")
    assert store.start("copy", request()).state == "paused"


# -- No write to an invocation that no longer runs ----------------------------------------


def _end(store: JournalStore, how: str) -> Started:
    """Start invocation ``inv`` and end it ``how``, by its own execution."""
    started = run(store)
    store.append("inv", started.fence, 0, CALL_ENTRY, False)
    if how == "paused":
        assert store.pause("inv", started.fence, "exhausted", CALL) == "paused"
    elif how == "suspended":
        assert store.suspend("inv", started.fence, "[]", [0], time.time() + 60, CALL) == how
    elif how == "replaced":
        assert store.finish("inv", started.fence, how, "", 60) is None
    else:
        assert store.finish("inv", started.fence, how, OUTCOME, 60) is None
    return started


@pytest.mark.parametrize("how", ["completed", "failed", "replaced", "paused", "suspended"])
def test_every_write_to_an_invocation_that_no_longer_runs_is_refused(
    store: JournalStore, how: str
) -> None:
    # The writer still holds the fence: its own execution (or an async step of it) ended
    # the run. Nothing more is written, whatever it tries.
    fence = _end(store, how).fence
    before = store.read("inv")
    writes: list[Callable[[], object]] = [
        lambda: store.append("inv", fence, 1, entry(1), False),
        lambda: store.record_attempt("inv", fence, 1, "{}"),
        lambda: store.record_attempt("inv", fence, 1, "{}", release=False),
        lambda: store.guard("inv", fence, 1),
        lambda: store.mark_sent("inv", fence, 0),
        lambda: store.suspend("inv", fence, "[]", [], time.time() + 60, CALL),
    ]
    if how in ("paused", "suspended"):  # a finished one answers with its outcome instead
        writes.append(lambda: store.finish("inv", fence, "completed", OUTCOME, 60))
    for write in writes:
        with pytest.raises(LeaseLost, match=f"it is {how}, no longer running"):
            write()
    assert not store.release("inv", fence, "fp-other")  # its arguments stay its own
    assert store.renew([("inv", fence)], 30.0) == [False]
    assert store.pause("inv", fence, "late") == how
    assert store.read("inv") == before


def test_a_finish_is_first_writer_wins_for_the_holder_too(store: JournalStore) -> None:
    started = _end(store, "completed")
    assert store.finish("inv", started.fence, "failed", '{"s":"error"}', 60) == (
        "completed", OUTCOME,
    )  # fmt: skip
    assert stored(store)[0]["status"] == "completed"


def test_a_finish_for_a_holder_that_cannot_ends_a_paused_or_suspended_invocation(
    store: JournalStore,
) -> None:
    for how in ("paused", "suspended"):
        started = _end(store, how)
        assert store.finish("inv", None, "cancelled", '{"s":"error"}', 60) is None
        meta, _, _ = stored(store)
        assert (meta["status"], int(meta["fence"])) == ("cancelled", started.fence + 1)
        assert not {"paused_reason", "awaiting", "released"} & set(meta)
        store.forget("inv")


# -- Fences only go up -------------------------------------------------------------------


def _stale_writes_learn_they_lost_the_lease(store: JournalStore, stale: int) -> None:
    """A holder of ``stale`` is told another execution holds the invocation: never that
    Redis lost writes (an outage), never that its lease was renewed."""
    assert store.renew([("inv", stale)], 30.0) == [False]
    with pytest.raises(LeaseLost, match="another execution"):
        store.append("inv", stale, 0, entry(0), False)
    with pytest.raises(LeaseLost, match="another execution"):
        store.finish("inv", stale, "completed", OUTCOME, 60)
    assert not store.release("inv", stale)


@pytest.mark.parametrize("how", ["forget", "purge", "expiry"])
def test_an_invocation_created_anew_starts_above_every_earlier_fence(
    store: JournalStore, how: str
) -> None:
    stale = run(store)
    if how == "forget":
        assert store.forget("inv")
    elif how == "purge":
        assert store.forget_if("inv", "running", time.time() + 1) == 1
    else:
        store.finish("inv", stale.fence, "completed", OUTCOME, 0.05)
        time.sleep(0.1)
        assert store.read("inv") is None
    anew = run(store, holder="host:2")
    assert anew.created
    assert anew.fence > stale.fence
    _stale_writes_learn_they_lost_the_lease(store, stale.fence)
    assert stored(store)[1] == []


@pytest.mark.parametrize("how", ["forget", "purge"])
def test_a_tombstone_keeps_fences_going_up_when_they_ran_ahead_of_the_clock(
    store: JournalStore, how: str
) -> None:
    started = run(store)
    ahead = started.fence + 3_600_000  # an hour ahead of the clock
    set_fence(store, "inv", ahead)
    if how == "forget":
        assert store.forget("inv")
    else:
        assert store.forget_if("inv", "running", time.time() + 1) == 1
    anew = run(store, holder="host:2")
    assert anew.fence == ahead + 1
    _stale_writes_learn_they_lost_the_lease(store, ahead)
    assert store.forget("inv")  # and a fork onto the id starts above it too
    fork = Fork("shop.checkout", "fp", 11, [], {}, CALL, "restarted")
    assert store.fork("inv", fork)
    assert run(store).fence == ahead + 3  # the fork's first fence, raised by its start


def test_a_replacement_starts_above_the_fence_of_the_invocation_it_replaced(
    store: JournalStore,
) -> None:
    replaced = run(store)
    set_fence(store, "inv", replaced.fence + 3_600_000)  # ahead of the clock
    ahead = replaced.fence + 3_600_000
    assert store.finish("inv", ahead, "replaced", "", 60) is None
    replacement = run(store, nesting=1, holder="host:2")
    assert (replacement.created, replacement.fence) == (True, ahead + 1)
    _stale_writes_learn_they_lost_the_lease(store, ahead)


def test_a_fence_newer_than_the_stored_one_means_lost_writes_not_a_lost_lease(
    store: JournalStore,
) -> None:
    # Fences only go up, so only a store that lost the start which gave it (a failover
    # to a replica that had not got it) stores an older fence than its holder's. The
    # heartbeat does not give the lease up: the holder's next write decides.
    started = run(store, ttl=0.5)
    lease_until = stored(store)[0]["lease_until"]
    assert store.renew([("inv", started.fence + 1)], 30.0) == [True]
    assert stored(store)[0]["lease_until"] == lease_until  # nothing was renewed
