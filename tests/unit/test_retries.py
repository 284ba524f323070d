"""Step failures on the in-memory store: attempts, exhaustion, crash loops, at-most-once."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from celery_durable.context import DurableContext
from celery_durable.errors import StepInterruptedError, StepRetry, TerminalError
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
            return str(exc)
        return "ran"

    assert execute(store, body, policy=RetryPolicy(max_attempts=1)) == "ValueError: no"
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


def test_a_delivery_after_a_celery_retry_is_not_a_crash() -> None:
    store = MemoryJournalStore()
    for retries in range(5):  # each delivery ended in a Celery retry: the count went up
        assert store.start("inv-1", "shop.checkout", "fp", 1, retries).crashes == 0
    assert store.start("inv-1", "shop.checkout", "fp", 1, 4).crashes == 1  # redelivered
    assert store.start("inv-1", "shop.checkout", "fp", 1, 4).crashes == 2  # and again
    assert store.start("inv-1", "shop.checkout", "fp", 1, 5).crashes == 0  # then a retry


def test_a_self_retry_after_a_death_does_not_count_as_another_death() -> None:
    store = MemoryJournalStore()
    assert store.start("inv-1", "shop.checkout", "fp", 1, 0).crashes == 0  # E1 dies
    started = store.start("inv-1", "shop.checkout", "fp", 1, 0)  # E2: a redelivery
    assert started.crashes == 1
    store.append("inv-1", 0, '{"k":"run","n":"s0","s":"ok","v":null}', False)
    # E2 then ends in self.retry(): E3 arrives with retries=1, and s1 runs.
    started = store.start("inv-1", "shop.checkout", "fp", 1, 1)
    assert started.crashes == 0


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
