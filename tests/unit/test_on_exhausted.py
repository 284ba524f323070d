"""``on_exhausted="pause"`` on the in-memory store: pause instead of fail, then resume."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import ConfigurationError, Paused, StepRetry, TerminalError
from celery_durable.journal.records import parse_invocation
from celery_durable.policy import RetryPolicy
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import Body, Crash, begin, execute

PAUSING = RetryPolicy(max_attempts=2, initial_interval=0, on_exhausted="pause")


def deliver(store: MemoryJournalStore, body: Body, policy: RetryPolicy, limit: int = 10) -> Any:
    """Deliver the task again after every retry or crash; stop at a pause."""
    for _ in range(limit):
        try:
            return execute(store, body, policy=policy)
        except (StepRetry, Crash):
            continue
    raise AssertionError(f"still not finished after {limit} deliveries")


def status(store: MemoryJournalStore) -> str:
    return store.meta["inv-1"]["status"]


def test_the_policy_refuses_an_unknown_on_exhausted() -> None:
    with pytest.raises(ConfigurationError, match=r"on_exhausted='explode'.*'fail', 'pause'"):
        RetryPolicy(on_exhausted="explode")  # type: ignore[arg-type]
    assert RetryPolicy().on_exhausted == "fail"


def test_the_paused_signal_survives_pickling() -> None:
    signal = pickle.loads(pickle.dumps(Paused("why")))
    assert (type(signal), signal.reason) == (Paused, "why")
    assert not isinstance(signal, Exception)


def test_an_exhausted_step_pauses_without_journaling_or_compensating() -> None:
    store = MemoryJournalStore()
    runs: Counter[str] = Counter()
    broken = [True]

    def charge() -> str:
        runs["charge"] += 1
        if broken[0]:
            raise ConnectionError("the bank is down")
        return "charged"

    def body(ctx: DurableContext) -> str:
        ctx.run("reserve", runs.update, ["reserve"])
        try:
            return ctx.run("charge", charge)
        except Exception:
            runs["compensated"] += 1  # must not run: the step has not failed for good
            raise

    with pytest.raises(Paused) as info:
        deliver(store, body, PAUSING)
    assert runs == {"reserve": 1, "charge": 2}
    assert status(store) == "paused"
    assert len(store.journals["inv-1"]) == 1  # nothing journaled for the step
    reason = store.meta["inv-1"]["paused_reason"]
    assert reason == info.value.reason
    assert "step 'charge' (index 1)" in reason
    assert "ConnectionError: the bank is down" in reason
    assert "durable resume inv-1" in reason
    inv = parse_invocation("inv-1", *(store.read("inv-1") or ({}, [], {})))
    paused = inv.steps[-1]
    assert (paused.index, paused.name, paused.status, paused.attempts) == (1, "charge", "paused", 2)
    assert paused.error == {"type": "ConnectionError", "message": "the bank is down"}

    # The cause is fixed; an operator resumes it: a fresh set of attempts, earlier steps
    # replayed.
    broken[0] = False
    assert store.resume("inv-1", "resumed", require_call=False).state == "resumed"
    assert execute(store, body, policy=PAUSING) == "charged"
    assert runs == {"reserve": 1, "charge": 3}
    assert status(store) == "completed"


def test_a_paused_invocation_delivered_again_runs_nothing_until_resumed() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []

    def fail() -> None:
        runs.append(1)
        raise ValueError("nope")

    def body(ctx: DurableContext) -> None:
        ctx.run("fail", fail)

    with pytest.raises(Paused):
        deliver(store, body, PAUSING)
    attempt = json.loads(store.meta["inv-1"]["attempt"])
    assert (attempt["i"], attempt["a"], attempt["e"]["type"]) == (0, 2, "ValueError")
    assert "lease" not in store.meta["inv-1"]
    assert runs == [1, 1]

    # A duplicate publish, a restored message, a retry in flight: nothing runs a 3rd time.
    for _ in range(2):
        assert begin(store, policy=PAUSING) == invocation.Finished("paused", None)
    assert (runs, status(store)) == ([1, 1], "paused")
    assert json.loads(store.meta["inv-1"]["attempt"])["a"] == 2

    # Only an operator moves it on: a fresh set of attempts.
    store.resume("inv-1", "resumed", require_call=False)
    with pytest.raises(Paused):
        deliver(store, body, PAUSING)
    assert runs == [1, 1, 1, 1]


def test_errors_the_policy_does_not_retry_still_fail_the_step() -> None:
    store = MemoryJournalStore()
    policy = RetryPolicy(
        max_attempts=5, initial_interval=0, dont_retry_on=(KeyError,), on_exhausted="pause"
    )
    seen: list[str] = []

    def body(ctx: DurableContext) -> None:
        for name, error in (("terminal", TerminalError("declined")), ("key", KeyError("k"))):
            try:
                ctx.run(name, _raise, error)
            except TerminalError as exc:
                seen.append(exc.error_type)

    execute(store, body, policy=policy)
    assert seen == ["TerminalError", "KeyError"]
    assert status(store) == "completed"


def test_max_duration_exhaustion_pauses_too() -> None:
    store = MemoryJournalStore()
    policy = RetryPolicy(
        max_attempts=None, max_duration=0.001, initial_interval=1, on_exhausted="pause"
    )

    def body(ctx: DurableContext) -> None:
        ctx.run("slow", _raise, TimeoutError("still down"))

    with pytest.raises(Paused, match="max_duration"):
        execute(store, body, policy=policy)
    assert status(store) == "paused"


def test_a_step_that_kills_its_worker_every_time_pauses_under_a_pausing_policy() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []

    def die() -> None:
        runs.append(1)
        raise Crash

    def body(ctx: DurableContext) -> None:
        ctx.run("die", die)

    with pytest.raises(Paused, match="WorkerLostError"):
        deliver(store, body, PAUSING)
    assert runs == [1, 1]
    assert status(store) == "paused"
    assert store.journals["inv-1"] == []


def test_deaths_outside_any_step_pause_under_a_pausing_task_policy() -> None:
    store = MemoryJournalStore()
    for _ in range(3):  # the first run and max_attempts=2 deaths are allowed
        started = begin(store, policy=PAUSING)
        assert isinstance(started, Execution)  # and it dies: its lease is never released
    paused = begin(store, policy=PAUSING)
    assert paused == invocation.Finished("paused", None)
    assert status(store) == "paused"
    assert "on_exhausted='pause'" in store.meta["inv-1"]["paused_reason"]


def test_an_exhausted_async_step_pauses_and_later_writes_do_not_wait_for_it() -> None:
    store = MemoryJournalStore()
    runs: Counter[str] = Counter()

    def body(ctx: DurableContext) -> None:
        future = ctx.run_async("async", _raise, ConnectionError("down"), retry=PAUSING)
        ctx.run("after", runs.update, ["after"])  # its entry would come after the async one
        runs["unreachable"] += 1
        future.result()

    with pytest.raises(Paused, match="step 'async' \\(index 0\\)"):
        execute(store, body)
    assert runs["unreachable"] == 0
    assert status(store) == "paused"
    assert store.journals["inv-1"] == []


def test_an_async_pause_wins_over_a_body_that_returns_without_waiting() -> None:
    store = MemoryJournalStore()

    def body(ctx: DurableContext) -> str:
        ctx.run_async("async", _raise, ConnectionError("down"), retry=PAUSING)
        return "done"

    started = begin(store)
    assert isinstance(started, Execution)
    assert body(DurableContext(started)) == "done"
    started.drain()
    assert isinstance(started.paused_by, Paused)
    with pytest.raises(Paused):  # what DurableTask does before completing, and in fail()
        invocation.fail(store, started, RuntimeError("unrelated"), retention=60)
    assert status(store) == "paused"


def _raise(error: BaseException) -> None:
    raise error
