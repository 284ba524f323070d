"""The store contract of flow control: cancels, deadlines, concurrency keys.

A cancel is one atomic mark that a finish races safely, and every reply an execution
gets anyway (its start, each write, each renewal) carries it. A deadline is written at
creation and acted on once. A concurrency key hands its slots out in arrival order, to
at most its limit of holders, and a holder that died, finished or left counts no more.
"""

from __future__ import annotations

import time

import pytest

from celery_durable.journal.store import Cancel, Cancelling, JournalStore, Started, StartRequest
from celery_durable.keys import DoneField
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore

CALL = '{"task":"shop.checkout","args":["o-1"],"kwargs":{},"options":{"task_id":"inv"}}'
ENTRY = '{"k":"run","n":"s%d","t":0,"d":0,"s":"ok","v":%d}'
CALL_ENTRY = '{"k":"call","n":"child","t":0,"d":0,"s":"ok","v":{"id":"inv/0","task":"t"}}'
OUTCOME = '{"s":"ok","v":1}'


def request(ttl: float = 30.0, timeout: float = 0.0, concurrency: str = "") -> StartRequest:
    return StartRequest(
        "shop.checkout", "fp", 1, ttl, "h:1", call=CALL, timeout=timeout, concurrency=concurrency
    )


def run(store: JournalStore, task_id: str = "inv", **options: float | str) -> Started:
    started = store.start(task_id, request(**options))  # type: ignore[arg-type]
    assert started.state == "run", started
    return started


def meta(store: JournalStore, task_id: str = "inv") -> dict[str, str]:
    found = store.read(task_id)
    assert found is not None
    return found[0]


def wakeups(store: JournalStore) -> list[str]:
    """The ids with a wake-up scheduled, due or not."""
    if isinstance(store, RedisJournalStore):
        return list(store.client.zrange(store._keys.wakeups, 0, -1))
    assert isinstance(store, MemoryJournalStore)
    return sorted(store.wakeups)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- Cancel ----------------------------------------------------------------------------------


def test_a_cancel_of_a_running_invocation_rides_on_every_reply_it_gets(
    store: JournalStore,
) -> None:
    started = run(store)
    assert store.append("inv", started.fence, 0, ENTRY % (0, 0), False) is None
    done = store.cancel("inv", "the customer left")
    assert done == Cancel("requested", "running")  # its live lease holds it: no call
    assert meta(store)["cancel"] == "the customer left"
    # The execution learns of it from its next write, without a round trip of its own ...
    assert store.append("inv", started.fence, 1, ENTRY % (1, 1), False) == Cancelling(
        "the customer left"
    )
    assert len((store.read("inv") or ({}, [], {}))[1]) == 2  # ... and the write was made
    # ... from its lease's renewal (a long step) ...
    assert store.renew([("inv", started.fence)], 30.0) == [Cancelling("the customer left")]
    # ... and a later execution from its start.
    assert store.release("inv", started.fence, cancellable=False) is True
    assert run(store).cancel == "the customer left"


def test_a_second_cancel_keeps_the_first_reason(store: JournalStore) -> None:
    run(store)
    store.cancel("inv", "first")
    assert store.cancel("inv", "second") == Cancel("requested", "running", already=True)
    assert meta(store)["cancel"] == "first"


@pytest.mark.parametrize("how", ["completed", "failed", "cancelled", "replaced"])
def test_a_cancel_of_a_finished_invocation_says_so_and_changes_nothing(
    store: JournalStore, how: str
) -> None:
    started = run(store)
    assert store.finish("inv", started.fence, how, OUTCOME, 60) is None
    before = store.read("inv")
    assert store.cancel("inv", "too late") == Cancel("finished", how)
    assert store.read("inv") == before
    assert wakeups(store) == []


def test_a_cancel_of_no_invocation_creates_none(store: JournalStore) -> None:
    assert store.cancel("nobody", "why") == Cancel("gone")
    assert store.read("nobody") is None


def test_a_finish_after_a_cancel_wins_nothing_back_and_loses_nothing(store: JournalStore) -> None:
    started = run(store)
    store.cancel("inv", "stop")
    # The body caught the cancel and returned: it completes, and a late cancel says so.
    assert store.finish("inv", started.fence, "completed", OUTCOME, 60) is None
    assert store.cancel("inv", "again") == Cancel("finished", "completed")
    assert store.start("inv", request()).state == "done"


def test_a_cancel_wakes_a_suspended_invocation_at_once(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, CALL_ENTRY, False)
    assert store.suspend("inv", started.fence, "[]", [0], time.time() + 3600, CALL) == "suspended"
    done = store.cancel("inv", "stop")
    assert done == Cancel("requested", "suspended", woken=True)
    [(woken, _)], _ = store.claim_wakeups(10, 30)  # due now, not in an hour
    assert woken == "inv"
    again = run(store)
    assert (again.status, again.cancel) == ("suspended", "stop")


def test_a_cancel_releases_a_paused_invocation_to_its_next_start(store: JournalStore) -> None:
    started = run(store)
    assert store.pause("inv", started.fence, "exhausted", CALL) == "paused"
    done = store.cancel("inv", "give up")
    assert done == Cancel("requested", "paused", woken=True)
    assert wakeups(store) == ["inv"]
    assert (meta(store)["released"], meta(store)["deaths"]) == ("cancel", "0")
    again = run(store)  # paused means paused, unless an operator moved it on: a cancel does
    assert (again.status, again.cancel) == ("paused", "give up")


def test_a_cancel_of_a_running_invocation_that_nothing_holds_hands_back_its_call(
    store: JournalStore,
) -> None:
    started = run(store)
    store.release("inv", started.fence, retry_in=3600)  # a step's retry, an hour from now
    assert store.cancel("inv", "stop") == Cancel("requested", "running", call=CALL)
    # A lease that ran out holds nothing either: its message may be lost.
    run(store, "dead", ttl=0.001)
    time.sleep(0.01)
    assert store.cancel("dead", "stop").call == CALL


def test_a_cancel_makes_a_suspension_ready_until_the_cancel_was_raised(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, CALL_ENTRY, False)
    store.cancel("inv", "stop")  # it ran: nothing woke, and it is about to suspend
    assert store.suspend("inv", started.fence, "[]", [0], 0, CALL) == "ready"
    # Once the body raised the cancel, its compensation may suspend as any body does.
    again = run(store)
    assert store.suspend("inv", again.fence, "[]", [0], 0, CALL, cancellable=False) == ("suspended")


def test_a_cancel_makes_a_step_retry_due_now_until_the_cancel_was_raised(
    store: JournalStore,
) -> None:
    started = run(store)
    store.cancel("inv", "stop")
    reply = store.record_attempt("inv", started.fence, 0, "{}", retry_in=3600)
    assert reply == Cancelling("stop")
    assert int(meta(store)["due"]) <= now_ms()
    again = run(store)
    assert store.record_attempt("inv", again.fence, 0, "{}", retry_in=3600, cancellable=False) is (
        None
    )
    assert int(meta(store)["due"]) > now_ms() + 3_000_000


def test_a_cancel_makes_a_release_due_now_until_the_cancel_was_raised(
    store: JournalStore,
) -> None:
    started = run(store)
    store.cancel("inv", "stop")
    assert store.release("inv", started.fence, retry_in=3600) == Cancelling("stop")
    assert int(meta(store)["due"]) <= now_ms()
    again = run(store)
    assert store.release("inv", again.fence, retry_in=3600, cancellable=False) is True
    assert int(meta(store)["due"]) > now_ms() + 3_000_000


def test_a_write_without_a_cancel_says_nothing_of_one(store: JournalStore) -> None:
    started = run(store)
    assert store.append("inv", started.fence, 0, ENTRY % (0, 0), False) is None
    assert store.renew([("inv", started.fence)], 30.0) == [True]
    assert store.record_attempt("inv", started.fence, 1, "{}", retry_in=1) is None
    assert run(store).cancel is None


# -- Deadlines -------------------------------------------------------------------------------


def test_a_deadline_is_written_at_creation_and_listed_once_due(store: JournalStore) -> None:
    run(store, timeout=0.2)
    run(store, "later", timeout=3600)
    run(store, "none")
    deadline = int(meta(store)["deadline"])
    assert now_ms() - 100 < deadline <= now_ms() + 200
    assert "deadline" not in meta(store, "none")
    due, wait = store.due_deadlines(10)
    assert due == [] and 0 < wait <= 0.2
    time.sleep(0.25)
    due, wait = store.due_deadlines(10)
    assert due == [("inv", pytest.approx(deadline / 1000))]
    assert 3500 < wait <= 3600
    # A later start keeps the deadline of the creation.
    store.start("inv", request(ttl=30, timeout=3600))
    assert int(meta(store)["deadline"]) == deadline


def test_a_deadline_is_acted_on_once(store: JournalStore) -> None:
    run(store, timeout=0.01)
    time.sleep(0.02)
    [(due, _)], _ = store.due_deadlines(10)
    assert store.cancel(due, "its deadline passed").state == "requested"
    assert store.due_deadlines(10) == ([], -1.0)
    # One that finished (or was forgotten) first is dropped as well, and nothing changes.
    started = run(store, "done", timeout=0.01)
    store.finish("done", started.fence, "completed", OUTCOME, 60)
    time.sleep(0.02)
    assert store.due_deadlines(10)[0] == [("done", pytest.approx(time.time(), abs=1))]
    assert store.cancel("done", "its deadline passed") == Cancel("finished", "completed")
    assert store.due_deadlines(10) == ([], -1.0)


def test_the_sweep_turn_is_one_holders_until_it_runs_out(store: JournalStore) -> None:
    assert store.take_recovery_turn(0.2, "worker-a")
    assert store.take_recovery_turn(0.2, "worker-a")  # still its turn
    assert not store.take_recovery_turn(0.2, "worker-b")
    time.sleep(0.25)
    assert store.take_recovery_turn(0.2, "worker-b")
    assert not store.take_recovery_turn(0.2, "worker-a")


# -- Concurrency keys ------------------------------------------------------------------------


def test_a_key_hands_out_its_limit_of_slots_then_queues_in_arrival_order(
    store: JournalStore,
) -> None:
    assert store.acquire_slot("acct-1", "a", 2).state == "acquired"
    assert store.acquire_slot("acct-1", "a", 2).state == "held"  # asked again: no second slot
    assert store.acquire_slot("acct-1", "b", 2).state == "acquired"
    c = store.acquire_slot("acct-1", "c", 2)
    time.sleep(0.002)
    d = store.acquire_slot("acct-1", "d", 2)
    assert (c.state, sorted(c.holders)) == ("queued", ["a", "b"])
    assert d.state == "queued" and int(d.ticket) > int(c.ticket)
    assert store.acquire_slot("acct-1", "c", 2).ticket == c.ticket  # it keeps its place
    assert store.acquire_slot("acct-2", "x", 2).state == "acquired"  # other keys run beside
    assert store.slot_state("acct-1") == (["a", "b"], ["c", "d"])

    # A holder that leaves hands its slot to the earliest waiter, which holds it from now.
    assert store.release_slots("acct-1", ["a"], 2) == [("c", c.ticket)]
    assert store.slot_state("acct-1") == (["b", "c"], ["d"])
    assert store.acquire_slot("acct-1", "c", 2).state == "held"
    assert store.release_slots("acct-1", ["b", "c"], 2) == [("d", d.ticket)]
    assert store.release_slots("acct-1", ["d"], 2) == []
    assert store.slot_state("acct-1") == ([], [])


def test_a_newcomer_never_jumps_the_line(store: JournalStore) -> None:
    store.acquire_slot("k", "a", 1)
    store.acquire_slot("k", "b", 1)
    # The limit goes up (a new deploy): a slot is free, and the first in line takes it.
    assert store.acquire_slot("k", "c", 2).state == "queued"
    assert store.acquire_slot("k", "b", 2).state == "acquired"
    assert store.slot_state("k") == (["a", "b"], ["c"])


def test_a_waiter_that_leaves_the_line_is_handed_nothing(store: JournalStore) -> None:
    store.acquire_slot("k", "a", 1)
    store.acquire_slot("k", "b", 1)
    store.acquire_slot("k", "c", 1)
    assert store.release_slots("k", ["b"], 1) == []  # a waiter cancelled: a holds on
    assert store.release_slots("k", ["a"], 1)[0][0] == "c"


def test_holders_are_checked_against_their_invocation(store: JournalStore) -> None:
    live = run(store, "live", ttl=30)
    run(store, "dead", ttl=0.001)
    released = run(store, "released")
    store.release("released", released.fence, retry_in=60)  # waits for a step's retry
    suspended = run(store, "suspended")
    store.append("suspended", suspended.fence, 0, CALL_ENTRY, False)
    store.suspend("suspended", suspended.fence, "[]", [0], 0, CALL)
    paused = run(store, "paused")
    store.pause("paused", paused.fence, "exhausted", CALL)
    finished = run(store, "finished")
    store.finish("finished", finished.fence, "completed", OUTCOME, 60)
    time.sleep(0.01)
    fence = int(meta(store, "dead")["fence"])

    lefts = store.check_holders(
        ["live", "dead", "released", "suspended", "paused", "finished", "gone"]
    )
    assert lefts[0] is not None and 29 < lefts[0] <= 30  # seconds until its lease runs out
    assert lefts[1:] == [None, -1.0, -1.0, -1.0, None, None]
    # The dead one is fenced out: an execution still running it past its lease stops.
    assert int(meta(store, "dead")["fence"]) == fence + 1
    assert live.fence == int(meta(store, "live")["fence"])
    assert store.check_holders([]) == []


def test_a_grant_wakes_a_suspended_waiter_and_is_there_before_it_suspends(
    store: JournalStore,
) -> None:
    grant = DoneField.grant("123")
    waiter = run(store)
    assert store.grant_slot("inv", grant) == 1  # it runs: told, not woken
    # Its suspension sees the grant: it runs again at once (no lost wake-up).
    assert store.suspend("inv", waiter.fence, "[]", [grant], 0, CALL) == "ready"
    other = run(store, "other")
    store.append("other", other.fence, 0, CALL_ENTRY, False)
    assert store.suspend("other", other.fence, "[]", [DoneField.grant("9")], 0, CALL) == (
        "suspended"
    )
    assert store.grant_slot("other", DoneField.grant("9")) == 2
    assert wakeups(store) == ["other"]


def test_a_grant_to_a_waiter_that_is_gone_or_finished_is_refused(store: JournalStore) -> None:
    assert store.grant_slot("gone", DoneField.grant("1")) == 0
    assert store.read("gone") is None
    started = run(store)
    store.finish("inv", started.fence, "cancelled", OUTCOME, 60)
    assert store.grant_slot("inv", DoneField.grant("1")) == 0
    assert store.completions("inv") == {}


def test_a_start_stores_the_concurrency_key_at_creation(store: JournalStore) -> None:
    run(store, concurrency="2:acct-1")
    assert meta(store)["ckey"] == "2:acct-1"
    store.start("inv", request(concurrency="3:other"))
    assert meta(store)["ckey"] == "2:acct-1"
    run(store, "plain")
    assert "ckey" not in meta(store, "plain")
