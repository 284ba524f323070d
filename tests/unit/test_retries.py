"""Step failures on the in-memory store: attempts, exhaustion, crash loops, at-most-once."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from billiard.exceptions import WorkerLostError

from celery_durable.context import DurableContext
from celery_durable.errors import StepInterruptedError, StepRetry, TerminalError
from celery_durable.journal.store import StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import Body, Crash, execute

NO_WAIT = RetryPolicy(max_attempts=3, initial_interval=0)


def deliver(store: MemoryJournalStore, body: Body, policy: RetryPolicy, limit: int = 20) -> Any:
    """Deliver the task again after every retry or crash, as Celery and the broker would."""
    for _ in range(limit):
        try:
            return execute(store, body, policy=policy)
        except (StepRetry, Crash):
            continue
    raise AssertionError(f"still not finished after {limit} deliveries")


def entry(store: MemoryJournalStore, index: int) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(store.journals["inv-1"][index])
    return parsed


def test_a_step_that_fails_n_times_succeeds_on_attempt_n_plus_one() -> None:
    store = MemoryJournalStore()
    runs: Counter[str] = Counter()

    def flaky() -> str:
        runs["flaky"] += 1
        if runs["flaky"] <= 2:
            raise ConnectionError(f"down #{runs['flaky']}")
        return "up"

    def body(ctx: DurableContext) -> str:
        ctx.run("first", runs.update, ["first"])
        return ctx.run("flaky", flaky)

    assert deliver(store, body, NO_WAIT) == "up"
    assert runs == {"first": 1, "flaky": 3}
    assert entry(store, 1)["a"] == 3
    assert "attempt" not in store.meta["inv-1"]


def test_the_attempt_record_keeps_count_first_failure_and_error() -> None:
    store = MemoryJournalStore()

    def body(ctx: DurableContext) -> None:
        ctx.run("flaky", _fail_with, ValueError("bad gateway"))

    with pytest.raises(StepRetry) as info:
        execute(store, body, policy=RetryPolicy(initial_interval=1.5, factor=1))
    assert info.value.countdown == 1.5
    assert isinstance(info.value.error, ValueError)
    record = json.loads(store.meta["inv-1"]["attempt"])
    assert record["i"] == 0
    assert record["n"] == "flaky"
    assert record["a"] == 1
    assert record["t"] > 0
    assert record["e"] == {"type": "ValueError", "message": "bad gateway"}


def _fail_with(error: Exception) -> None:
    raise error


def test_exhaustion_journals_a_terminal_error_with_the_original_type() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []
    caught: list[TerminalError] = []

    def body(ctx: DurableContext) -> str:
        try:
            ctx.run("charge", lambda: runs.append(1) or _fail_with(KeyError("card")))
        except TerminalError as exc:
            caught.append(exc)
            return "compensated"
        return "charged"

    assert deliver(store, body, NO_WAIT) == "compensated"
    assert len(runs) == 3
    assert (caught[0].error_type, caught[0].attempts) == ("KeyError", 3)
    assert "'card'" in caught[0].message
    recorded = entry(store, 0)
    assert (recorded["s"], recorded["a"], recorded["e"]["type"]) == ("error", 3, "KeyError")
    # A later delivery replays the error without running the step.
    assert execute(store, body, policy=NO_WAIT) == "compensated"
    assert len(runs) == 3


def test_max_attempts_one_runs_once_and_hands_the_error_to_the_handler() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []

    def body(ctx: DurableContext) -> str:
        try:
            ctx.run("once", lambda: runs.append(1) or _fail_with(ValueError("no")))
        except TerminalError as exc:
            return f"{type(exc).__name__}: {exc} (a ValueError: {isinstance(exc, ValueError)})"
        return "ran"

    assert execute(store, body, policy=RetryPolicy(max_attempts=1)) == (
        "ValueError: no (a ValueError: True)"
    )
    assert runs == [1]


def test_a_worker_that_dies_in_a_step_every_time_ends_in_a_terminal_error() -> None:
    store = MemoryJournalStore()
    runs: Counter[str] = Counter()

    def die() -> None:
        runs["die"] += 1
        raise Crash

    def body(ctx: DurableContext) -> str:
        ctx.run("before", runs.update, ["before"])
        try:
            ctx.run("die", die)
        except TerminalError as exc:
            return f"{exc.error_type} after {exc.attempts}"
        return "survived"

    assert deliver(store, body, NO_WAIT) == "WorkerLostError after 3"
    # Three executions ran the step and died; the fourth found three deaths and gave up
    # without running it.
    assert runs == {"before": 1, "die": 3}


def test_deaths_and_failures_add_up_against_the_same_policy() -> None:
    store = MemoryJournalStore()
    runs: list[str] = []

    def sometimes() -> None:
        runs.append("x")
        if len(runs) == 1:
            raise Crash  # the worker dies
        raise ValueError("then fails")

    def body(ctx: DurableContext) -> None:
        ctx.run("step", sometimes)

    with pytest.raises(TerminalError) as info:
        deliver(store, body, NO_WAIT)
    assert len(runs) == 3
    assert info.value.attempts == 3


def request(ended_fence: int = 0) -> StartRequest:
    return StartRequest("shop.checkout", "fp", 1, 0.0, "test:1", ended_fence=ended_fence)


def test_an_expired_lease_never_released_is_a_death_and_a_released_one_is_not() -> None:
    store = MemoryJournalStore()
    first = store.start("inv-1", request())
    assert (first.state, first.deaths) == ("run", 0)
    assert store.start("inv-1", request()).deaths == 1  # first never ended: it died
    third = store.start("inv-1", request())
    assert third.deaths == 2  # and the second too
    assert store.release("inv-1", third.fence)  # the third ended in a Celery retry
    assert store.start("inv-1", request()).deaths == 2  # which adds no death


def test_deaths_count_again_from_one_once_the_journal_grew() -> None:
    store = MemoryJournalStore()
    store.start("inv-1", request())
    started = store.start("inv-1", request())
    assert started.deaths == 1
    store.append("inv-1", started.fence, 0, '{"k":"run","n":"s0","s":"ok","v":null}', False)
    assert store.start("inv-1", request()).deaths == 1  # a death at the new frontier


def test_an_execution_that_ended_in_an_outage_is_not_a_death() -> None:
    store = MemoryJournalStore()
    first = store.start("inv-1", StartRequest("shop.checkout", "fp", 1, 30.0, "test:1"))
    # It could not release its lease (Redis refused writes) and published a retry that
    # carries its fence: that start takes over at once, and counts no death.
    retried = store.start("inv-1", request(ended_fence=first.fence))
    assert (retried.state, retried.deaths) == ("run", 0)


def test_deaths_outside_any_step_end_under_the_tasks_policy() -> None:
    store = MemoryJournalStore()
    executions: list[int] = []

    def body(ctx: DurableContext) -> str:
        ctx.run("only", lambda: 1)
        executions.append(1)
        raise Crash  # dies after the last step, every time

    with pytest.raises(TerminalError) as info:
        deliver(store, body, NO_WAIT)
    assert info.value.error_type == "WorkerLostError"
    assert not isinstance(info.value, WorkerLostError)  # the worker would requeue that forever
    assert info.value.attempts == 4
    assert "position 1" in info.value.message
    # Three attempts allowed: the fourth death ends it, at the fifth start.
    assert len(executions) == 4
    assert store.meta["inv-1"]["status"] == "failed"


def test_an_interrupted_at_most_once_step_is_never_run_twice() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []

    def send_money() -> None:
        runs.append(1)
        raise Crash  # the worker dies after the money left, before the journal knew

    def body(ctx: DurableContext) -> str:
        try:
            ctx.run("send", send_money, at_most_once=True)
        except StepInterruptedError as exc:
            return f"interrupted: {exc.error_type}"
        return "sent"

    with pytest.raises(Crash):
        execute(store, body, policy=NO_WAIT)
    assert execute(store, body, policy=NO_WAIT) == "interrupted: StepInterruptedError"
    assert execute(store, body, policy=NO_WAIT) == "interrupted: StepInterruptedError"
    assert runs == [1]
    assert entry(store, 0)["e"]["type"] == "StepInterruptedError"


def test_an_at_most_once_step_that_finishes_costs_one_extra_round_trip() -> None:
    store = MemoryJournalStore()
    execute(store, lambda ctx: ctx.run("send", lambda: 1, at_most_once=True))
    assert store.round_trips == 1 + 2 + 1
    assert "guard" not in store.meta["inv-1"]


def test_an_at_most_once_step_that_raises_is_retried_not_interrupted() -> None:
    store = MemoryJournalStore()
    runs: list[int] = []

    def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("the call failed cleanly")
        return "sent"

    assert deliver(store, lambda ctx: ctx.run("send", flaky, at_most_once=True), NO_WAIT) == "sent"
    assert runs == [1, 1]
