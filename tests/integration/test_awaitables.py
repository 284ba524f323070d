"""Awaitables with an in-thread worker: timers, awakeables, children, run_async, all/any."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from celery import Celery

from celery_durable import (
    DurableTask,
    TerminalError,
    get_invocation,
    reject_awakeable,
    resolve_awakeable,
)
from tests.processes import wait_for

TIMEOUT = 30


def test_sleep_suspends_and_a_wake_up_runs_the_rest(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def nap(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["before"])
        self.ctx.sleep(0.5)
        self.ctx.run("after", runs.update, ["after"])
        return "rested"

    with worker():
        started = time.monotonic()
        result = nap.delay()
        inv = wait_for(lambda: _status(app, result.id, "suspended"), "the invocation to suspend")
        assert [a["kind"] for a in inv.awaiting] == ["sleep"]
        assert result.get(timeout=TIMEOUT) == "rested"
        took = time.monotonic() - started
    assert 0.5 <= took < 5
    assert runs == {"before": 1, "after": 1}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.kind, s.name, s.status) for s in inv.steps] == [
        ("run", "before", "completed"),
        ("sleep", "sleep", "completed"),
        ("run", "after", "completed"),
    ]


def test_an_awakeable_resolved_from_outside_gives_its_value(app: Celery, worker: Any) -> None:
    ids: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def approve(self: DurableTask) -> Any:
        awakeable_id, approval = self.ctx.awakeable("approval")
        self.ctx.run("ask", ids.append, awakeable_id)
        return approval.result()

    with worker():
        result = approve.delay()
        wait_for(lambda: _status(app, result.id, "suspended"), "the invocation to suspend")
        [awakeable_id] = ids
        assert resolve_awakeable(app, awakeable_id, {"by": "ada"}) is True
        assert resolve_awakeable(app, awakeable_id, {"by": "eve"}) is False  # first wins
        assert result.get(timeout=TIMEOUT) == {"by": "ada"}
    assert ids == [awakeable_id]  # the ask step ran once
    assert resolve_awakeable(app, awakeable_id, {"by": "late"}) is False  # finished


def test_a_rejected_awakeable_raises_a_terminal_error(app: Celery, worker: Any) -> None:
    ids: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def approve(self: DurableTask) -> str:
        awakeable_id, approval = self.ctx.awakeable()
        self.ctx.run("ask", ids.append, awakeable_id)
        try:
            approval.result()
        except TerminalError as exc:
            return f"rejected: {exc}"
        return "approved"

    with worker():
        result = approve.delay()
        wait_for(lambda: ids, "the awakeable id")
        assert reject_awakeable(app, ids[0], "too expensive") is True
        assert result.get(timeout=TIMEOUT) == "rejected: too expensive"


def test_any_of_an_awakeable_and_a_timer_takes_the_timer_and_keeps_that_branch(
    app: Celery, worker: Any
) -> None:
    ids: list[str] = []
    branches: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def race(self: DurableTask) -> int:
        awakeable_id, approval = self.ctx.awakeable()
        self.ctx.run("ask", ids.append, awakeable_id)
        winner = self.ctx.any(approval, self.ctx.timer(0.5)).result()
        branches.append(winner)
        if len(branches) == 1:
            # Resolved after the timer won: a replay must still take the timer's branch.
            resolve_awakeable(app, awakeable_id, "late")
            self.ctx.sleep(0.2)
        return winner

    with worker():
        assert race.delay().get(timeout=TIMEOUT) == 1
    assert branches == [1, 1]


def test_children_plain_and_durable_run_once_and_all_gives_values_in_order(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()

    @app.task(shared=False)
    def plain_double(n: int) -> int:
        runs["plain"] += 1
        return n * 2

    @app.task(base=DurableTask, bind=True, shared=False)
    def durable_square(self: DurableTask, n: int) -> int:
        return int(self.ctx.run("square", lambda: runs.update(["durable"]) or n * n))

    @app.task(base=DurableTask, bind=True, shared=False)
    def parent(self: DurableTask) -> list[Any]:
        ctx = self.ctx
        return ctx.all(
            ctx.call(plain_double.s(21)),
            ctx.call(durable_square.s(5)),
            ctx.timer(0.2),
        ).result()

    with worker():
        result = parent.delay()
        assert result.get(timeout=TIMEOUT) == [42, 25, None]
    assert runs == {"plain": 1, "durable": 1}
    child = get_invocation(app, f"{result.id}/1")
    assert child is not None
    assert child.status == "completed"


def test_a_failed_child_comes_back_as_its_error_type(app: Celery, worker: Any) -> None:
    @app.task(shared=False)
    def refuse() -> None:
        raise KeyError("sku-9")

    @app.task(base=DurableTask, bind=True, shared=False)
    def parent(self: DurableTask) -> list[Any]:
        ctx = self.ctx
        settled = ctx.all(ctx.call(refuse.s()), ctx.timer(0.1), settle=True).result()
        return [type(settled[0]).__name__, isinstance(settled[0], TerminalError), settled[1]]

    with worker():
        assert parent.delay().get(timeout=TIMEOUT) == ["KeyError", True, None]


def test_run_async_steps_run_concurrently_and_replay(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    def slow(name: str) -> str:
        runs[name] += 1
        time.sleep(0.3)
        return name

    @app.task(base=DurableTask, bind=True, shared=False)
    def fan_out(self: DurableTask) -> tuple[list[str], float]:
        ctx = self.ctx
        started = time.monotonic()
        futures = [ctx.run_async(f"s{i}", slow, f"s{i}") for i in range(4)]
        values = ctx.all(*futures).result()
        took = ctx.run("took", lambda: time.monotonic() - started)
        if runs["replays"] == 0:
            runs["replays"] += 1
            self.retry(countdown=0)  # run again: every step replays
        return values, took

    with worker():
        values, took = fan_out.delay().get(timeout=TIMEOUT)
    assert values == ["s0", "s1", "s2", "s3"]
    assert took < 1.0
    assert runs == {"s0": 1, "s1": 1, "s2": 1, "s3": 1, "replays": 1}


def _status(app: Celery, task_id: str, status: str) -> Any:
    inv = get_invocation(app, task_id)
    return inv if inv is not None and inv.status == status else None


@pytest.fixture(autouse=True)
def _short_lease(app: Celery) -> None:
    app.conf.durable_lease_ttl = 5
