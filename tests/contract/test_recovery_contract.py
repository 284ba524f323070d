"""The store contract of recovery: which running invocations count as lost, and claims.

A claim is the recovery sweep's only way to learn that an invocation's message is gone:
it must never hand back one that a live lease, a retry's countdown, a suspension or a
pause explains, and it must not hand back the same one at every sweep.
"""

from __future__ import annotations

import time

import pytest

from celery_durable.journal.store import JournalStore, Started, StartRequest

CALL = '{"task":"shop.checkout","args":["o-1"],"kwargs":{},"options":{"task_id":"inv"}}'
#: durable_recovery_after in these tests, seconds.
AFTER = 0.2


def run(store: JournalStore, task_id: str = "inv", ttl: float = 0.05, call: str = CALL) -> Started:
    started = store.start(task_id, StartRequest("shop.checkout", "fp", 1, ttl, "h:1", call=call))
    assert started.state == "run", started
    return started


def lost_after(store: JournalStore, task_id: str = "inv", timeout: float = 5.0) -> float:
    """Claim ``task_id`` as soon as it counts as lost; return how long that took."""
    began = time.monotonic()
    while True:
        [call] = store.recover([task_id], AFTER)
        if call is not None:
            return time.monotonic() - began
        assert time.monotonic() - began < timeout, f"{task_id} never counted as lost"
        time.sleep(0.01)


def test_a_start_that_creates_the_invocation_stores_its_call(store: JournalStore) -> None:
    run(store)
    assert store.wake_state("inv") == ("running", CALL)
    # Later starts keep it: only a retry with new arguments changes it (release).
    store.start("inv", StartRequest("shop.checkout", "fp", 1, 30.0, "h:2", call="{}"))
    assert store.wake_state("inv") == ("running", CALL)


def test_a_running_invocation_is_lost_once_its_lease_ran_out_long_enough(
    store: JournalStore,
) -> None:
    # Timed from before the start that takes the lease: a slow start (a loaded machine,
    # a cluster node's first call) must not make a claim on time look early.
    began = time.monotonic()
    run(store, ttl=0.3)
    assert store.recover(["inv"], AFTER) == [None]  # its lease is live
    lost_after(store)
    waited = time.monotonic() - began
    assert 0.3 + AFTER - 0.05 <= waited < 0.3 + AFTER + 1.0
    meta = (store.read("inv") or ({}, [], {}))[0]
    assert meta["status"] == "running"
    assert meta["lease"] == "h:1"  # the dead holder's death still counts at the next start


def test_a_claim_puts_off_the_next_one_longer_each_time(store: JournalStore) -> None:
    run(store)
    lost_after(store)
    assert store.recover(["inv"], AFTER) == [None]  # just claimed: not at every sweep
    second = lost_after(store)
    third = lost_after(store)
    assert AFTER - 0.05 <= second < 2 * AFTER - 0.05 < third < 4 * AFTER + 0.5


def test_an_execution_that_takes_the_lease_resets_the_backoff(store: JournalStore) -> None:
    run(store)
    lost_after(store)
    lost_after(store)  # the second claim waited twice as long as the first
    run(store, ttl=0.05)  # the published call came and its execution died too
    assert lost_after(store) < 0.05 + 2 * AFTER - 0.05


def test_a_released_invocation_waits_for_its_retry_to_be_due(store: JournalStore) -> None:
    started = run(store, ttl=30.0)
    assert store.release("inv", started.fence, retry_in=0.5)
    assert "lease" not in (store.read("inv") or ({}, [], {}))[0]
    assert 0.5 + AFTER - 0.05 <= lost_after(store) < 0.5 + AFTER + 1.0


def test_a_step_retry_waits_for_its_countdown(store: JournalStore) -> None:
    started = run(store, ttl=30.0)
    assert store.record_attempt("inv", started.fence, 0, '{"a":1}', retry_in=0.5) is None
    assert 0.5 + AFTER - 0.05 <= lost_after(store) < 0.5 + AFTER + 1.0


def test_deaths_recorded_during_a_step_keep_the_lease(store: JournalStore) -> None:
    started = run(store, ttl=30.0)
    store.record_attempt("inv", started.fence, 0, '{"a":1}', release=False, retry_in=0.0)
    time.sleep(AFTER + 0.05)
    assert store.recover(["inv"], AFTER) == [None]  # still held


def test_a_release_with_new_arguments_stores_their_call(store: JournalStore) -> None:
    started = run(store, ttl=30.0)
    assert store.release("inv", started.fence, "fp-b", retry_in=0.0, call='{"args":["B"]}')
    meta = (store.read("inv") or ({}, [], {}))[0]
    assert (meta["fingerprint"], meta["call"]) == ("fp-b", '{"args":["B"]}')
    assert store.release("inv", started.fence, retry_in=0.0)  # a plain retry keeps them
    meta = (store.read("inv") or ({}, [], {}))[0]
    assert (meta["fingerprint"], meta["call"]) == ("fp-b", '{"args":["B"]}')


@pytest.mark.parametrize("status", ["suspended", "paused", "completed", "failed", "cancelled"])
def test_an_invocation_that_is_not_running_is_never_lost(store: JournalStore, status: str) -> None:
    started = run(store)
    if status == "suspended":
        store.suspend("inv", started.fence, "[]", [], time.time() + 60, CALL)
    elif status == "paused":
        store.pause("inv", started.fence, "a step's policy was exhausted", CALL)
    else:
        store.finish("inv", started.fence, status, '{"s":"ok","v":1}', 60, call=CALL)
    time.sleep(0.05 + AFTER + 0.05)
    assert store.recover(["inv", "gone"], AFTER) == [None, None]
    assert (store.read("inv") or ({}, [], {}))[0]["status"] == status


def test_a_lost_invocation_without_a_stored_call_is_claimed_with_none(
    store: JournalStore,
) -> None:
    run(store, call="")
    lost_after(store)
    assert store.recover(["inv"], AFTER) == [None]  # claimed: not reported at every sweep


def test_one_process_at_a_time_takes_the_recovery_turn(store: JournalStore) -> None:
    assert store.take_recovery_turn(0.2)
    assert not store.take_recovery_turn(0.2)
    time.sleep(0.25)
    assert store.take_recovery_turn(0.2)
