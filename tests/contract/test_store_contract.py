"""The journal store contract: what every store does, atomically, in one round trip each."""

from __future__ import annotations

import json
import threading
import time

import pytest

from celery_durable.errors import JournalError, LeaseLost
from celery_durable.journal.store import JournalStore, Reopening, Started, StartRequest

ENTRY = '{"k":"run","n":"s%d","t":0,"d":0,"s":"ok","v":%d}'
OUTCOME = '{"s":"ok","v":1}'


def request(
    fingerprint: str = "fp",
    ttl: float = 30.0,
    holder: str = "host:1",
    task: str = "shop.checkout",
    nesting: int = 0,
    ended_fence: int = 0,
    seed: int = 11,
) -> StartRequest:
    return StartRequest(
        task, fingerprint, seed, ttl, holder, nesting=nesting, ended_fence=ended_fence
    )


def run(store: JournalStore, task_id: str = "inv", **options: object) -> Started:
    started = store.start(task_id, request(**options))  # type: ignore[arg-type]
    assert started.state == "run", started
    return started


def entry(i: int) -> str:
    return ENTRY % (i, i)


# -- Start --------------------------------------------------------------------------------


def test_the_first_start_creates_the_invocation_and_takes_the_lease(store: JournalStore) -> None:
    before_ms = time.time() * 1000
    started = run(store, seed=42)
    assert (started.created, started.seed, started.entries) == (True, 42, [])
    # A new invocation's first fence is the clock in ms: above any an earlier one of
    # the same id handed out (test_guarantees_contract).
    assert before_ms - 1000 < started.fence < time.time() * 1000 + 1000
    meta, journal, _ = store.read("inv") or ({}, [], {})
    assert (meta["status"], meta["lease"], meta["task"], journal) == (
        "running", "host:1", "shop.checkout", [],
    )  # fmt: skip


def test_a_start_while_the_lease_is_live_is_busy_and_changes_nothing(store: JournalStore) -> None:
    first = run(store)
    busy = store.start("inv", request(holder="host:2"))
    assert busy.state == "busy"
    assert 29 < busy.busy_for <= 30
    assert busy.holder == "host:1"
    store.append("inv", first.fence, 0, entry(0), False)  # the holder goes on writing
    assert store.read("inv")[0]["fence"] == str(first.fence)  # type: ignore[index]


def test_a_start_after_the_lease_expired_takes_over_with_a_new_fence(store: JournalStore) -> None:
    first = run(store, ttl=0.05)
    store.append("inv", first.fence, 0, entry(0), False)
    time.sleep(0.1)
    second = run(store, holder="host:2")
    assert (second.created, second.fence, second.entries, second.deaths) == (
        False, first.fence + 1, [entry(0)], 1,
    )  # fmt: skip
    assert second.seed == first.seed


def test_a_start_with_other_arguments_or_task_is_a_conflict(store: JournalStore) -> None:
    run(store)
    other = store.start("inv", request(fingerprint="fp2"))
    assert (other.state, other.fingerprint, other.task_name) == ("conflict", "fp", "shop.checkout")
    assert store.start("inv", request(task="shop.other")).state == "conflict"


def test_a_finished_invocation_starts_as_done_with_its_outcome(store: JournalStore) -> None:
    started = run(store)
    assert store.finish("inv", started.fence, "completed", OUTCOME, 60) is None
    done = store.start("inv", request())
    assert (done.state, done.status, done.outcome) == ("done", "completed", OUTCOME)


def test_a_start_reads_exactly_the_journal_it_resumed(store: JournalStore) -> None:
    # An execution whose lease is over keeps appending while others start: every start
    # sees the journal whole, as it was when it took over, and the stale writer stops.
    stale = run(store, ttl=0.001)
    written: list[int] = []
    stop = threading.Event()

    def keep_appending() -> None:
        i = 0
        try:
            while not stop.is_set():
                store.append("inv", stale.fence, i, entry(i), False)
                written.append(i)
                i += 1
        except LeaseLost:
            pass

    writer = threading.Thread(target=keep_appending)
    writer.start()
    time.sleep(0.02)
    taken = run(store, holder="host:2")
    stop.set()
    writer.join()
    assert taken.entries == [entry(i) for i in range(len(taken.entries))]
    assert len(written) == len(taken.entries)  # nothing the stale writer wrote is lost
    _, journal, _ = store.read("inv") or ({}, [], {})
    assert journal == taken.entries  # and it wrote nothing after the takeover


# -- Deaths and clean ends ----------------------------------------------------------------


def test_deaths_are_unreleased_expired_leases_counted_at_one_frontier(store: JournalStore) -> None:
    first = run(store, ttl=0.001)
    assert first.deaths == 0
    time.sleep(0.01)
    second = run(store, ttl=0.001)
    assert second.deaths == 1
    time.sleep(0.01)
    third = run(store, ttl=0.001)
    assert third.deaths == 2
    store.append("inv", third.fence, 0, entry(0), False)  # progress, then death
    time.sleep(0.01)
    fourth = run(store)
    assert fourth.deaths == 1
    assert store.release("inv", fourth.fence)  # a clean end adds no death
    assert run(store).deaths == 1


def test_an_execution_that_ended_in_an_outage_is_neither_busy_nor_dead(
    store: JournalStore,
) -> None:
    first = run(store)
    retried = run(store, ended_fence=first.fence, holder="host:2")
    assert (retried.deaths, retried.fence) == (0, first.fence + 1)


def test_a_dead_holders_lease_can_be_broken_and_still_counts_as_a_death(
    store: JournalStore,
) -> None:
    run(store, holder="host:7")
    assert not store.break_lease("inv", "host:8")  # another holder: nothing happens
    assert store.start("inv", request()).state == "busy"
    assert store.break_lease("inv", "host:7")
    assert run(store).deaths == 1


def test_renewing_extends_the_lease_of_its_holder_only(store: JournalStore) -> None:
    first = run(store, ttl=0.2)
    time.sleep(0.1)
    assert store.renew([("inv", first.fence), ("nope", 1)], 0.5) == [True, False]
    time.sleep(0.15)  # past the first ttl, within the renewed one
    assert store.start("inv", request()).state == "busy"
    time.sleep(0.4)
    second = run(store)
    assert store.renew([("inv", first.fence)], 0.5) == [False]
    assert store.renew([("inv", second.fence)], 0.5) == [True]


def test_recording_an_attempt_releases_the_lease_and_keeps_the_attempt(
    store: JournalStore,
) -> None:
    started = run(store)
    assert store.record_attempt("inv", started.fence, 0, '{"a":1}') is None
    again = run(store)
    assert (again.deaths, again.attempt) == (0, '{"a":1}')
    assert store.record_attempt("inv", again.fence, 0, '{"a":2}', release=False) is None
    assert store.start("inv", request()).state == "busy"  # still held


# -- Re-opening for Celery's retry idiom ------------------------------------------------


def test_a_release_that_reopens_drops_the_last_entries_and_records_the_attempt(
    store: JournalStore,
) -> None:
    started = run(store)
    for i in range(3):
        store.append("inv", started.fence, i, entry(i), False)
    assert store.release("inv", started.fence, reopen=Reopening(1, entry(2), '{"a":1}'))
    again = run(store)
    # One write: the lease released (no death), the entries from 1 on gone, the attempt in.
    assert (again.deaths, again.entries, again.attempt) == (0, [entry(0)], '{"a":1}')
    store.append("inv", again.fence, 1, entry(7), True)  # the re-opened step runs again
    meta, journal, _ = store.read("inv") or ({}, [], {})
    assert journal == [entry(0), entry(7)]
    assert "attempt" not in meta


def test_a_release_can_reopen_the_first_entry(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, entry(0), False)
    assert store.release("inv", started.fence, reopen=Reopening(0, entry(0), '{"a":1}'))
    again = run(store)
    assert (again.entries, again.attempt) == ([], '{"a":1}')
    assert store.append("inv", again.fence, 0, entry(5), True) is None


def test_a_release_reopens_only_the_entry_that_is_still_the_last(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, entry(0), False)
    store.append("inv", started.fence, 1, entry(1), False)
    # It names entry 0, which entry 1 follows: released, and the journal kept whole.
    assert store.release("inv", started.fence, reopen=Reopening(0, entry(0), '{"a":1}'))
    again = run(store)
    assert (again.deaths, again.entries, again.attempt) == (0, [entry(0), entry(1)], None)
    assert store.release("inv", again.fence, reopen=Reopening(2, entry(1), '{"a":1}'))
    assert run(store).entries == [entry(0), entry(1)]  # nothing at or after index 2


def test_a_fenced_out_release_reopens_nothing(store: JournalStore) -> None:
    stale = run(store, ttl=0.001)
    store.append("inv", stale.fence, 0, entry(0), False)
    time.sleep(0.01)
    current = run(store)
    assert not store.release("inv", stale.fence, reopen=Reopening(0, entry(0), '{"a":1}'))
    meta, journal, _ = store.read("inv") or ({}, [], {})
    assert (journal, meta["lease"], meta["fence"]) == ([entry(0)], "host:1", str(current.fence))
    assert "attempt" not in meta


# -- Writes -------------------------------------------------------------------------------


def test_appends_are_first_writer_wins_and_refuse_gaps(store: JournalStore) -> None:
    started = run(store)
    assert store.append("inv", started.fence, 0, entry(0), False) is None
    assert store.append("inv", started.fence, 0, entry(9), False) == entry(0)
    with pytest.raises(JournalError, match="entry 5 written while the journal holds 1"):
        store.append("inv", started.fence, 5, entry(5), False)


def test_every_write_of_a_fenced_out_execution_is_refused(store: JournalStore) -> None:
    stale = run(store, ttl=0.001)
    time.sleep(0.01)
    current = run(store)
    for write in (
        lambda: store.append("inv", stale.fence, 0, entry(0), False),
        lambda: store.record_attempt("inv", stale.fence, 0, "{}"),
        lambda: store.guard("inv", stale.fence, 0),
        lambda: store.pause("inv", stale.fence, "why"),
        lambda: store.finish("inv", stale.fence, "completed", OUTCOME, 60),
        lambda: store.suspend("inv", stale.fence, "[]", [], time.time() + 60, "{}"),
        lambda: store.mark_sent("inv", stale.fence, 0),
    ):
        with pytest.raises(LeaseLost, match="another execution"):
            write()
    assert not store.release("inv", stale.fence)
    meta, journal, done = store.read("inv") or ({}, [], {})
    assert (meta["status"], meta["fence"], journal) == ("running", str(current.fence), [])
    assert (meta["lease"], "guard" in meta, done) == ("host:1", False, {})
    assert store.claim_wakeups(10, 30) == ([], -1.0)


def test_writes_to_a_forgotten_invocation_are_refused_and_recreate_nothing(
    store: JournalStore,
) -> None:
    started = run(store)
    assert store.forget("inv")
    for write in (
        lambda: store.append("inv", started.fence, 0, entry(0), False),
        lambda: store.record_attempt("inv", started.fence, 0, "{}"),
        lambda: store.guard("inv", started.fence, 0),
        lambda: store.pause("inv", started.fence, "why"),
        lambda: store.finish("inv", started.fence, "completed", OUTCOME, 60),
        lambda: store.finish("inv", None, "cancelled", OUTCOME, 60),  # a revoke, too late
        lambda: store.suspend("inv", started.fence, "[]", [], time.time() + 60, "{}"),
        lambda: store.mark_sent("inv", started.fence, 0),
    ):
        with pytest.raises(LeaseLost, match="no longer exists"):
            write()
    assert not store.release("inv", started.fence)
    assert store.renew([("inv", started.fence)], 30.0) == [False]
    assert store.read("inv") is None
    assert not store.forget("inv")
    assert store.list_ids(None, 10) == []


def test_an_attempt_or_guard_after_the_step_was_journaled_returns_the_entry(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, entry(0), False)
    assert store.record_attempt("inv", started.fence, 0, "{}", release=False) == entry(0)
    assert store.guard("inv", started.fence, 0) == entry(0)
    assert store.guard("inv", started.fence, 1) is None
    assert run(store, ttl=0.001, ended_fence=started.fence).guard == 1
    store.append("inv", started.fence + 1, 1, entry(1), True)  # the entry ends the guard
    meta, _, _ = store.read("inv") or ({}, [], {})
    assert "guard" not in meta


# -- Finishing, pausing, replacing ----------------------------------------------------


def test_finishing_is_first_writer_wins_and_starts_the_retention(store: JournalStore) -> None:
    started = run(store)
    assert store.finish("inv", started.fence, "completed", OUTCOME, 0.2) is None
    assert store.finish("inv", started.fence, "failed", '{"s":"error"}', 60) == (
        "completed", OUTCOME,
    )  # fmt: skip
    time.sleep(0.3)
    assert store.read("inv") is None


def test_a_finish_for_a_holder_that_cannot_fences_it_out(store: JournalStore) -> None:
    started = run(store)
    assert store.finish("inv", None, "cancelled", '{"s":"error"}', 60) is None
    with pytest.raises(LeaseLost):
        store.append("inv", started.fence, 0, entry(0), False)
    done = store.start("inv", request())
    assert (done.state, done.status) == ("done", "cancelled")


def test_pausing_needs_the_fence_and_a_running_invocation(store: JournalStore) -> None:
    started = run(store)
    assert store.pause("inv", started.fence, "the code changed") == "paused"
    meta, _, _ = store.read("inv") or ({}, [], {})
    assert (meta["status"], meta["paused_reason"]) == ("paused", "the code changed")
    assert store.resume("inv", "resumed", require_call=False).state == "resumed"
    resumed = run(store)  # an operator released it: the next start runs it, with no death
    assert (resumed.status, resumed.deaths) == ("paused", 0)
    assert store.finish("inv", resumed.fence, "completed", OUTCOME, 60) is None
    with pytest.raises(LeaseLost):
        store.pause("inv", started.fence, "late")  # the stale pauser cannot undo it
    assert store.pause("inv", resumed.fence, "late") == "completed"
    assert (store.read("inv") or ({}, [], {}))[0]["status"] == "completed"


def test_a_replaced_invocation_starts_afresh_only_for_the_replacement(
    store: JournalStore,
) -> None:
    started = run(store, nesting=0)
    store.append("inv", started.fence, 0, entry(0), False)
    assert store.finish("inv", started.fence, "replaced", "", 60, nesting=0) is None
    original = store.start("inv", request(nesting=0))  # the replaced request, again
    assert (original.state, original.status) == ("done", "replaced")
    replacement = run(store, task="shop.other", fingerprint="fp2", nesting=1)
    assert (replacement.created, replacement.entries) == (True, [])
    meta, journal, _ = store.read("inv") or ({}, [], {})
    assert (meta["task"], meta["status"], journal) == ("shop.other", "running", [])


# -- Listing ------------------------------------------------------------------------------


def test_listing_by_live_status_reads_only_that_status(store: JournalStore) -> None:
    a = run(store, "a")
    time.sleep(0.002)
    b = run(store, "b")
    time.sleep(0.002)
    c = run(store, "c")
    store.pause("b", b.fence, "why")
    store.finish("c", c.fence, "completed", OUTCOME, 60)
    assert store.list_ids("running", 10) == ["a"]
    assert store.list_ids("paused", 10) == ["b"]
    assert store.list_ids(None, 10) == ["c", "b", "a"]
    assert store.list_ids(None, 1, offset=1) == ["b"]
    assert a.created


def test_the_index_of_all_invocations_is_trimmed_by_retention(store: JournalStore) -> None:
    # An app has one retention: ids created longer ago than that and finished are gone
    # from the listing by the time a later invocation finishes.
    old = run(store, "old")
    store.finish("old", old.fence, "completed", OUTCOME, 0.1)
    time.sleep(0.15)
    new = run(store, "new")
    store.finish("new", new.fence, "completed", OUTCOME, 0.1)
    assert store.list_ids(None, 10) == ["new"]


def test_entries_and_outcomes_are_kept_as_written(store: JournalStore) -> None:
    started = run(store)
    text = json.dumps({"k": "run", "n": "ünï", "v": "\u2603"}, ensure_ascii=False)
    store.append("inv", started.fence, 0, text, False)
    assert run(store, ended_fence=started.fence).entries == [text]


# -- Waiting: suspension, completions from outside, wake-ups -----------------------------

CALL_ENTRY = '{"k":"call","n":"child","t":0,"d":0,"s":"ok","v":{"id":"inv-c1","task":"t"}}'
AWAKEABLE_ENTRY = '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"s3cr3t"}}'


def test_an_invocation_suspends_releases_its_lease_and_wakes_on_a_completion(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, CALL_ENTRY, False)
    store.mark_sent("inv", started.fence, 0)
    assert store.suspend("inv", started.fence, '[{"index":0}]', [0], 0, '{"task":"t"}') == (
        "suspended"
    )
    meta, _, done = store.read("inv") or ({}, [], {})
    assert (meta["status"], meta["awaiting"], meta["call"]) == (
        "suspended", '[{"index":0}]', '{"task":"t"}',
    )  # fmt: skip
    assert "lease" not in meta
    assert done == {"0:sent": "1"}
    assert store.list_ids("suspended", 10) == ["inv"]
    assert store.claim_wakeups(10, 30) == ([], -1.0)  # nothing due: it waits for a child

    assert store.complete("inv", 0, "call", "inv-c1", '{"s":"ok","v":7}') == 2
    assert store.complete("inv", 0, "call", "inv-c1", '{"s":"ok","v":8}') == 0  # first wins
    [(woken, claim)], _ = store.claim_wakeups(10, 30)
    assert woken == "inv"
    assert store.claim_wakeups(10, 30)[0] == []  # claimed: hidden from other workers
    store.ack_wakeup("inv", claim)

    resumed = run(store)
    assert (resumed.status, resumed.deaths, resumed.completions) == (
        "suspended", 0, {"0": '{"s":"ok","v":7}', "0:sent": "1"},
    )  # fmt: skip
    meta, _, _ = store.read("inv") or ({}, [], {})
    assert (meta["status"], "awaiting" in meta) == ("running", False)
    assert store.list_ids("running", 10) == ["inv"]


def test_a_suspension_stores_the_call_of_the_delivery_that_suspends(store: JournalStore) -> None:
    # A retry with new arguments between two suspensions changes the call: the wake-up
    # must publish the new one, or the start refuses it as other arguments.
    first = run(store)
    store.suspend("inv", first.fence, "[]", [], time.time() + 60, '{"args":["A"]}')
    second = run(store)
    assert store.release("inv", second.fence, "fp-b")  # Task.retry(args=["B"])
    third = run(store, fingerprint="fp-b")
    store.suspend("inv", third.fence, "[]", [], time.time() + 60, '{"args":["B"]}')
    assert store.wake_state("inv") == ("suspended", '{"args":["B"]}')


def test_suspending_when_the_completion_is_already_there_is_ready(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, AWAKEABLE_ENTRY, False)
    assert store.complete("inv", 0, "awakeable", "s3cr3t", '{"s":"ok","v":"yes"}') == 1
    assert store.suspend("inv", started.fence, "[]", [0], 0, "{}") == "ready"
    assert store.start("inv", request()).state == "run"  # its lease was released


def test_a_completion_needs_the_journaled_id_of_that_kind(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, AWAKEABLE_ENTRY, False)
    assert store.complete("inv", 0, "awakeable", "guess", '{"s":"ok","v":1}') == 0
    assert store.complete("inv", 0, "call", "s3cr3t", '{"s":"ok","v":1}') == 0
    assert store.complete("inv", 1, "awakeable", "s3cr3t", '{"s":"ok","v":1}') == 0
    assert store.complete("nope", 0, "awakeable", "s3cr3t", '{"s":"ok","v":1}') == 0
    store.finish("inv", started.fence, "completed", OUTCOME, 60)
    assert store.complete("inv", 0, "awakeable", "s3cr3t", '{"s":"ok","v":1}') == 0
    assert store.completions("inv") == {}


def test_a_timer_wakes_a_suspended_invocation_when_it_is_due(store: JournalStore) -> None:
    started = run(store)
    assert store.suspend("inv", started.fence, "[]", [], time.time() + 0.15, "{}") == ("suspended")
    claimed, until_next = store.claim_wakeups(10, 30)
    assert claimed == []
    assert 0 < until_next <= 0.15
    time.sleep(0.2)
    [(woken, claim)], _ = store.claim_wakeups(10, 0.05)
    assert woken == "inv"
    time.sleep(0.1)  # its claimer died before acknowledging: it comes due again
    [(again, claim2)], _ = store.claim_wakeups(10, 30)
    store.ack_wakeup("inv", claim)  # the first claimer's late ack removes nothing
    assert again == "inv"
    store.ack_wakeup("inv", claim2)
    assert store.claim_wakeups(10, 30) == ([], -1.0)


def test_a_due_timer_is_ready_and_a_wake_up_goes_once_the_invocation_is_awake(
    store: JournalStore,
) -> None:
    started = run(store)
    assert store.suspend("inv", started.fence, "[]", [], time.time() - 1, "{}") == "ready"
    again = run(store)
    store.suspend("inv", again.fence, "[]", [], time.time() + 0.1, "{}")
    woken = run(store, ended_fence=0)  # woken early by something else: its timer goes
    time.sleep(0.15)
    assert store.claim_wakeups(10, 30) == ([], -1.0)
    store.suspend("inv", woken.fence, "[]", [], time.time() + 0.1, "{}")
    store.finish("inv", run(store).fence, "completed", OUTCOME, 60)  # finished: it goes too
    time.sleep(0.15)
    assert store.claim_wakeups(10, 30) == ([], -1.0)
