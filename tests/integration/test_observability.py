"""Signals and spans of executions in a real worker, journals in Redis."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from opentelemetry.trace import StatusCode

from celery_durable import DurableTask, NonDeterminismError, RetryPolicy, get_invocation
from tests.observing import recording, spans_named, tracing_to_memory

TIMEOUT = 30
#: The timer the order waits for, seconds: long enough that it cannot be due before the
#: execution suspends, even on a machine under load (else it runs on without suspending).
SETTLE = 1.0


def define(app: Celery) -> Any:
    charges: list[int] = []

    def charge() -> str:
        charges.append(1)
        if len(charges) == 1:
            raise ConnectionError("card processor hung up")
        return "ch-1"

    @app.task(base=DurableTask, bind=True, shared=False)
    def order(self: DurableTask) -> str:
        ctx = self.ctx
        ctx.run("reserve", lambda: {"sku": "A1"})
        ctx.run("charge", charge, retry=RetryPolicy(max_attempts=3, initial_interval=0.1))
        ctx.sleep(SETTLE, name="settle")
        ctx.run("ship", lambda: "parcel")
        return "ok"

    return order


def test_signals_in_a_worker_follow_retries_suspension_and_replays(
    app: Celery, worker: Any
) -> None:
    order = define(app)
    with recording() as recorder, worker():
        result = order.delay()
        assert result.get(timeout=TIMEOUT) == "ok"
    assert recorder.trail(result.id) == [
        ("step_started", "reserve"),
        ("step_succeeded", "reserve"),
        ("step_started", "charge"),
        ("step_failed", "charge"),  # retried through Celery, 0.1 s later
        ("step_replayed", "reserve"),
        ("step_started", "charge"),
        ("step_succeeded", "charge"),
        ("step_succeeded", "settle"),
        ("invocation_suspended", ""),  # the worker slot is free; a wake-up comes
        ("step_replayed", "reserve"),
        ("step_replayed", "charge"),
        ("step_replayed", "settle"),
        ("step_started", "ship"),
        ("step_succeeded", "ship"),
        ("invocation_completed", "completed"),
    ]
    sent = recorder.of(result.id)
    failed = next(kw for s, kw in sent if s == "step_failed")
    assert failed["retry_in"] == pytest.approx(0.1) and isinstance(failed["error"], ConnectionError)
    replayed = [kw for s, kw in sent if s == "step_replayed" and kw["name"] == "charge"]
    assert replayed[0]["value"] == "ch-1" and replayed[0]["attempts"] == 2
    assert {sender.name for sender in recorder.senders()} == {order.name}
    inv = get_invocation(app, result.id)
    assert inv is not None and [s.name for s in inv.steps] == [
        "reserve",
        "charge",
        "settle",
        "ship",
    ]


def test_spans_in_a_worker_one_per_execution_and_per_step_attempt(app: Celery, worker: Any) -> None:
    order = define(app)
    with tracing_to_memory() as exporter, worker():
        result = order.delay()
        assert result.get(timeout=TIMEOUT) == "ok"
    spans = exporter.get_finished_spans()
    executions = spans_named(spans, "durable.execution")
    assert [dict(s.attributes or {})["durable.outcome"] for s in executions] == [
        "ended",  # a Celery retry of the charge
        "suspended",
        "completed",
    ]
    assert {dict(s.attributes or {})["durable.invocation_id"] for s in executions} == {result.id}
    assert [s.name for s in spans_named(spans, "durable.step")] == [
        "durable.step reserve",
        "durable.step charge",
        "durable.step charge",
        "durable.step ship",
    ]
    replayed = [
        dict(e.attributes or {})["durable.step.name"]
        for s in executions
        for e in s.events
        if e.name == "durable.step.replayed"
    ]
    assert replayed == ["reserve", "reserve", "charge", "settle"]
    assert executions[-1].status.status_code is StatusCode.UNSET


def test_replay_each_step_on_a_worker_redelivers_after_every_entry(
    app: Celery, worker: Any
) -> None:
    app.conf.durable_replay_each_step = True
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def steady(self: DurableTask) -> list[int]:
        runs.append(self.request.retries)
        values = [self.ctx.run(f"step-{i}", lambda i=i: i) for i in range(3)]
        key = self.ctx.rand.uuid4().hex[:6]
        values.append(self.ctx.run(f"keyed-{key}", lambda: 3))
        return values

    with recording() as recorder, worker():
        result = steady.delay()
        assert result.get(timeout=TIMEOUT) == [0, 1, 2, 3]
    # Four entries: each journaled by its own delivery (a Celery retry), then one more
    # delivery replays all four and completes.
    assert runs == [0, 1, 2, 3, 4]
    trail = recorder.trail(result.id)
    assert [name for s, name in trail if s == "step_started"] == [
        "step-0",
        "step-1",
        "step-2",
        trail[-2][1],
    ]
    assert len([s for s, _ in trail if s == "step_replayed"]) == 0 + 1 + 2 + 3 + 4


def test_replay_each_step_on_a_worker_catches_a_non_deterministic_body(
    app: Celery, worker: Any
) -> None:
    app.conf.durable_replay_each_step = True
    seen: list[bool] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def fickle(self: DurableTask) -> str:
        self.ctx.run("look", lambda: "stock")
        # Branches on what it saw on this delivery, not on a journaled value.
        first_time = not seen
        seen.append(True)
        self.ctx.run("reserve" if first_time else "backorder", lambda: 1)
        return "done"

    with worker():
        result = fickle.delay()
        with pytest.raises(NonDeterminismError, match="journal index 1"):
            result.get(timeout=TIMEOUT)
    inv = get_invocation(app, result.id)
    assert inv is not None and inv.status == "paused"
