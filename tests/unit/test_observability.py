"""Signals, log lines and spans of executions, eager (journals in memory, no Redis)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from celery import Celery
from opentelemetry.trace import StatusCode

from celery_durable import DurableTask, NonDeterminismError, RetryPolicy, TerminalError
from celery_durable.signals import observer_for
from celery_durable.testing import isolated
from tests.observing import recording, spans_named, tracing_to_memory

QUICK = RetryPolicy(max_attempts=3, initial_interval=0.0)
#: The timer the order waits for, seconds. Long enough that it cannot be due before the
#: execution suspends, however long the machine stalls it in between (a 10 ms timer was:
#: under load the suspension found it due, ran on at once, and signalled no suspension).
SETTLE = 0.5


def attribute(item: Any, name: str) -> Any:
    """An attribute of a span or an event."""
    return (item.attributes or {})[name]


def define(app: Celery) -> dict[str, Any]:
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
        ctx.run("charge", charge, retry=QUICK)
        ctx.sleep(SETTLE, name="settle")
        ctx.run("ship", lambda: ("parcel", 1))
        return "ok"

    @app.task(base=DurableTask, bind=True, shared=False)
    def doomed(self: DurableTask) -> str:
        self.ctx.run("reserve", lambda: 1)

        def refuse() -> None:
            raise TerminalError("card declined")

        self.ctx.run("charge", refuse)
        return "unreachable"

    @app.task(base=DurableTask, bind=True, shared=False)
    def parallel(self: DurableTask) -> list[Any]:
        a = self.ctx.run_async("a", lambda: "A")
        b = self.ctx.run_async("b", lambda: "B")
        return self.ctx.all(a, b).result()

    return {"order": order, "doomed": doomed, "parallel": parallel}


def test_nothing_watches_an_execution_when_nobody_listens(durable_app: Celery) -> None:
    task = define(durable_app)["order"]
    logging.getLogger("celery_durable.steps").setLevel(logging.WARNING)
    try:
        assert observer_for(task) is None
        with recording():
            assert observer_for(task) is not None
        assert observer_for(task) is None
    finally:
        logging.getLogger("celery_durable.steps").setLevel(logging.NOTSET)


def test_signals_follow_the_journal_across_executions(durable_app: Celery) -> None:
    order = define(durable_app)["order"]
    with recording() as recorder:
        result = order.apply(throw=False)  # an eager retry runs the task again in process
    assert result.get() == "ok"
    trail = recorder.trail(result.id)
    assert trail == [
        # First execution: the charge fails and is retried.
        ("step_started", "reserve"),
        ("step_succeeded", "reserve"),
        ("step_started", "charge"),
        ("step_failed", "charge"),
        # Second: the reserve replays, the charge runs again, the timer is journaled.
        ("step_replayed", "reserve"),
        ("step_started", "charge"),
        ("step_succeeded", "charge"),
        ("step_succeeded", "settle"),
        ("invocation_suspended", ""),
        # Third, once the timer is due: everything replays, then the ship step.
        ("step_replayed", "reserve"),
        ("step_replayed", "charge"),
        ("step_replayed", "settle"),
        ("step_started", "ship"),
        ("step_succeeded", "ship"),
        ("invocation_completed", "completed"),
    ]
    sent = recorder.of(result.id)
    failed = next(kw for s, kw in sent if s == "step_failed")
    assert failed["retry_in"] == 0.0 and isinstance(failed["error"], ConnectionError)
    assert (failed["index"], failed["kind"], failed["attempts"]) == (1, "run", 1)
    started = [kw["attempt"] for s, kw in sent if s == "step_started" and kw["name"] == "charge"]
    assert started == [1, 2]
    succeeded = {kw["name"]: kw for s, kw in sent if s == "step_succeeded"}
    assert succeeded["charge"]["value"] == "ch-1" and succeeded["charge"]["attempts"] == 2
    assert succeeded["ship"]["value"] == ["parcel", 1]  # as ctx.run returns it: decoded
    assert succeeded["settle"]["kind"] == "sleep" and "until" in succeeded["settle"]["value"]
    replayed = [kw for s, kw in sent if s == "step_replayed" and kw["name"] == "reserve"]
    assert [kw["value"] for kw in replayed] == [{"sku": "A1"}, {"sku": "A1"}]
    suspended = next(kw for s, kw in sent if s == "invocation_suspended")
    assert [a["name"] for a in suspended["awaiting"]] == ["settle"]
    completed = next(kw for s, kw in sent if s == "invocation_completed")
    assert (completed["result"], completed["error"]) == ("ok", None)
    assert recorder.senders() == {order}


def test_a_journaled_failure_and_a_failed_invocation_are_signalled(durable_app: Celery) -> None:
    doomed = define(durable_app)["doomed"]
    with recording() as recorder, pytest.raises(TerminalError, match="card declined"):
        doomed.delay()
    [(invocation_id,)] = {(kw["invocation_id"],) for _, _, kw in recorder.sent}
    sent = recorder.of(invocation_id)
    failed = next(kw for s, kw in sent if s == "step_failed")
    assert failed["retry_in"] is None and isinstance(failed["error"], TerminalError)
    completed = next(kw for s, kw in sent if s == "invocation_completed")
    assert completed["status"] == "failed" and isinstance(completed["error"], TerminalError)


def test_a_non_deterministic_replay_signals_a_pause(durable_app: Celery) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def fickle(self: DurableTask) -> None:
        self.ctx.run("first", lambda: 1)
        self.ctx.run(uuid.uuid4().hex, lambda: 2)

    durable_app.conf.task_eager_propagates = False
    with recording() as recorder, isolated(durable_app, replay_each_step=True):
        result = fickle.apply()
    assert isinstance(result.result, NonDeterminismError)
    paused = [kw for s, kw in recorder.of(result.id) if s == "invocation_paused"]
    assert len(paused) == 1 and "not deterministic at journal index 1" in paused[0]["reason"]


def test_steps_log_the_invocation_and_step_replays_at_debug(
    durable_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    order = define(durable_app)["order"]
    with caplog.at_level(logging.DEBUG, logger="celery_durable.steps"):
        result = order.apply(throw=False)
    assert result.get() == "ok"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.endswith("steps")]
    name = order.name
    assert ("INFO", f"{name}[{result.id}] step 'reserve' (#0) journaled") in [
        (level, message.split(" in ")[0]) for level, message in lines
    ]
    assert (
        "INFO",
        f"{name}[{result.id}] step 'charge' (#1) failed on attempt 1, retrying in 0 s: "
        "ConnectionError: card processor hung up",
    ) in lines
    assert ("DEBUG", f"{name}[{result.id}] run 'reserve' (#0) replayed") in lines
    assert ("INFO", f"{name}[{result.id}] sleep 'settle' (#2) journaled") in lines
    replays = [m for level, m in lines if "replayed" in m]
    assert replays and all(level == "DEBUG" for level, m in lines if "replayed" in m)


def test_spans_for_new_work_and_events_for_replayed_steps(durable_app: Celery) -> None:
    order = define(durable_app)["order"]
    with tracing_to_memory() as exporter:
        result = order.apply(throw=False)
    assert result.get() == "ok"
    spans = exporter.get_finished_spans()
    executions = spans_named(spans, "durable.execution")
    assert [attribute(s, "durable.outcome") for s in executions] == [
        "ended",
        "suspended",
        "completed",
    ]
    assert [attribute(s, "durable.steps.replayed") for s in executions] == [0, 1, 3]
    assert [attribute(s, "durable.steps.new") for s in executions] == [1, 2, 1]
    steps = spans_named(spans, "durable.step")
    # One span per attempt of a step that ran; none for the five replayed ones.
    assert [s.name for s in steps] == [
        "durable.step reserve",
        "durable.step charge",
        "durable.step charge",
        "durable.step ship",
    ]
    assert all(attribute(s, "durable.step.replayed") is False for s in steps)
    first_charge, second_charge = steps[1], steps[2]
    assert first_charge.status.status_code is StatusCode.ERROR
    assert attribute(first_charge, "durable.step.retry_in") == 0.0
    assert first_charge.events[0].name == "exception"
    assert attribute(second_charge, "durable.step.attempt") == 2
    assert second_charge.status.status_code is StatusCode.UNSET
    # Each step span is a child of its execution's span.
    parents = [executions[0], executions[0], executions[1], executions[2]]
    for step, execution in zip(steps, parents, strict=True):
        assert step.parent is not None and execution.context is not None
        assert step.parent.span_id == execution.context.span_id
    replayed = [e for e in executions[2].events if e.name == "durable.step.replayed"]
    assert [attribute(e, "durable.step.name") for e in replayed] == ["reserve", "charge", "settle"]
    assert all(attribute(e, "durable.step.replayed") is True for e in replayed)
    journaled = [e for e in executions[1].events if e.name == "durable.step.journaled"]
    assert [attribute(e, "durable.step.kind") for e in journaled] == ["sleep"]
    assert attribute(executions[2], "durable.invocation_id") == result.id


def test_async_steps_are_spans_under_their_execution(durable_app: Celery) -> None:
    parallel = define(durable_app)["parallel"]
    with tracing_to_memory() as exporter:
        assert parallel.delay().get() == ["A", "B"]
    spans = exporter.get_finished_spans()
    [execution] = spans_named(spans, "durable.execution")
    steps = spans_named(spans, "durable.step")
    assert sorted(s.name for s in steps) == ["durable.step a", "durable.step b"]
    assert execution.context is not None
    assert {s.parent.span_id for s in steps if s.parent} == {execution.context.span_id}
    events = [attribute(e, "durable.step.kind") for e in execution.events]
    assert events == ["all"]


def test_a_failed_execution_span_has_an_error_status(durable_app: Celery) -> None:
    doomed = define(durable_app)["doomed"]
    with tracing_to_memory() as exporter, pytest.raises(TerminalError):
        doomed.delay()
    spans = exporter.get_finished_spans()
    [execution] = spans_named(spans, "durable.execution")
    assert attribute(execution, "durable.outcome") == "failed"
    assert execution.status.status_code is StatusCode.ERROR
    charge = spans_named(spans, "durable.step charge")[0]
    assert charge.status.status_code is StatusCode.ERROR


def test_tracing_off_makes_no_span(durable_app: Celery) -> None:
    order = define(durable_app)["order"]
    with tracing_to_memory() as exporter:
        pass
    assert order.apply(throw=False).get() == "ok"
    assert exporter.get_finished_spans() == ()


def test_replay_each_step_spans_count_the_step_each_execution_journaled(
    durable_app: Celery,
) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def three(self: DurableTask) -> int:
        return sum(self.ctx.run(f"s{i}", lambda i=i: i) for i in range(3))

    with tracing_to_memory() as exporter, isolated(durable_app, replay_each_step=True):
        assert three.delay().get() == 3
    executions = spans_named(exporter.get_finished_spans(), "durable.execution")
    # One execution per entry, each journaling one, and a last one that replays them all.
    assert [attribute(s, "durable.steps.new") for s in executions] == [1, 1, 1, 0]
    assert [attribute(s, "durable.steps.replayed") for s in executions] == [0, 1, 2, 3]
    steps = spans_named(exporter.get_finished_spans(), "durable.step")
    assert [s.name for s in steps] == ["durable.step s0", "durable.step s1", "durable.step s2"]
    assert all(s.status.status_code is StatusCode.UNSET for s in steps)


def test_the_attempt_that_exhausts_a_pausing_policy_is_signalled(durable_app: Celery) -> None:
    pausing = RetryPolicy(max_attempts=2, initial_interval=0.0, on_exhausted="pause")

    def down() -> None:
        raise ConnectionError("the bank is down")

    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def charge(self: DurableTask) -> None:
        self.ctx.run("charge", down, retry=pausing)

    with recording() as recorder, tracing_to_memory() as exporter:
        result = charge.apply(throw=False)
    trail = [(s, kw) for s, kw in recorder.of(result.id) if s.startswith(("step_f", "inv"))]
    assert [(s, kw.get("attempts"), kw.get("retry_in")) for s, kw in trail] == [
        ("step_failed", 1, 0.0),
        ("step_failed", 2, None),
        ("invocation_paused", None, None),
    ]
    assert isinstance(trail[1][1]["error"], ConnectionError)
    executions = spans_named(exporter.get_finished_spans(), "durable.execution")
    assert [attribute(s, "durable.steps.new") for s in executions] == [0, 0]  # nothing journaled
    steps = spans_named(exporter.get_finished_spans(), "durable.step")
    assert [s.status.status_code for s in steps] == [StatusCode.ERROR, StatusCode.ERROR]


def test_a_journaled_failure_and_a_pause_are_logged_with_the_task_name(
    durable_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = define(durable_app)
    with caplog.at_level(logging.INFO, logger="celery_durable"):
        failed = tasks["doomed"].apply(throw=False)
    name = tasks["doomed"].name
    assert (
        "WARNING",
        f"{name}[{failed.id}] step 'charge' (#1) failed for good after 1 attempt(s): "
        "TerminalError: card declined",
    ) in [(r.levelname, r.getMessage()) for r in caplog.records]

    pausing = RetryPolicy(max_attempts=1, on_exhausted="pause")

    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def stuck(self: DurableTask) -> None:
        self.ctx.run("charge", _hang_up, retry=pausing)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="celery_durable"):
        paused = stuck.apply(throw=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "celery_durable"]
    assert any(m.startswith(f"{stuck.name}[{paused.id}] paused: step 'charge'") for m in messages)
    assert not any(m.startswith("invocation ") for m in messages)


def _hang_up() -> None:
    raise ConnectionError("card processor hung up")
