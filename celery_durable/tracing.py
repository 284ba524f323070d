"""OpenTelemetry spans of durable executions (``pip install 'celery-durable[otel]'``).

Turn them on once per process, after configuring your tracer provider::

    from celery_durable import tracing

    tracing.instrument()  # or instrument(tracer_provider=provider)

Then each execution of a ``DurableTask`` is a span, ``durable.execution <task>``, a
child of the span current when it starts (Celery's own instrumentation's, if any),
and current while the body runs. Each attempt of a step whose function runs
(``ctx.run``, ``ctx.run_async``) is a child span, ``durable.step <name>``, current
while the function runs, so that what the function does nests under it.

Replayed steps did no work in this execution, so they are **not** spans: each is an
event ``durable.step.replayed`` on the execution span, with the attribute
``durable.step.replayed = true``, and the execution span counts them in
``durable.steps.replayed`` (new ones in ``durable.steps.new``). Operations that
journal an entry without running a function (a timer, a child call, an awakeable,
``all``/``any``) are events ``durable.step.journaled``. Suspending and pausing are
events too, and ``durable.outcome`` says how the execution ended: ``completed``,
``failed``, ``suspended``, ``paused``, or ``ended`` (a retry, a deferral, an
abandoned execution in ``durable_replay_each_step`` mode).

Attributes: ``durable.invocation_id``, ``durable.task``, ``durable.step.index``,
``durable.step.name``, ``durable.step.kind``, ``durable.step.attempt``,
``durable.step.retry_in`` (a failed attempt that is retried). A failed step or
execution has an error status and the exception recorded.

Nothing here imports OpenTelemetry until ``instrument`` is called, and an execution
costs nothing more while tracing is off.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from celery_durable.engine.execution import Execution
from celery_durable.engine.observer import Observer
from celery_durable.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None


def instrument(tracer_provider: Any = None) -> None:
    """Emit spans for every durable execution in this process from now on.

    Args:
        tracer_provider: The ``TracerProvider`` to take the tracer from; the global one
            (``opentelemetry.trace.set_tracer_provider``) if None.

    Raises:
        ConfigurationError: opentelemetry-api is not installed.
    """
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ConfigurationError(
            "celery_durable.tracing needs opentelemetry-api: pip install 'celery-durable[otel]'."
        ) from exc
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours: str | None = version("celery-durable")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = None
    _tracer = trace.get_tracer("celery_durable", ours, tracer_provider=tracer_provider)


def uninstrument() -> None:
    """Stop emitting spans (executions already running finish theirs)."""
    global _tracer
    _tracer = None


def is_instrumented() -> bool:
    return _tracer is not None


def observer(task_name: str) -> Observer | None:
    """A span observer for one execution of ``task_name``; None while tracing is off."""
    return None if _tracer is None else SpanObserver(_tracer, task_name)


class SpanObserver(Observer):
    """Makes the spans and events of one execution (see the module docstring)."""

    __slots__ = ("_lock", "_new", "_open", "_outcome", "_replayed", "_span", "_task", "_token",
                 "_tracer")  # fmt: skip

    def __init__(self, tracer: Tracer, task_name: str) -> None:
        self._tracer = tracer
        self._task = task_name
        self._span: Span | None = None
        # A context token: Any, as opentelemetry-api types it ``object`` up to 1.27 and
        # ``Token[Context]`` later.
        self._token: Any = None
        #: Open step spans by journal index: the span, its context token, its thread.
        self._open: dict[int, tuple[Span, Any, int]] = {}
        self._lock = threading.Lock()
        self._replayed = 0
        self._new = 0
        self._outcome = ""

    # -- The execution ------------------------------------------------------------------

    def execution_started(self, ex: Execution) -> None:
        from opentelemetry import context, trace

        self._span = self._tracer.start_span(
            f"durable.execution {self._task}",
            attributes={
                "durable.invocation_id": ex.id,
                "durable.task": self._task,
                "durable.journal.entries": len(ex.entries),
            },
        )
        self._token = context.attach(trace.set_span_in_context(self._span))

    def execution_ended(self, ex: Execution, error: BaseException | None) -> None:
        from opentelemetry import context
        from opentelemetry.trace import StatusCode

        span = self._span
        if span is None:
            return
        me = threading.get_ident()
        with self._lock:
            left = sorted(self._open.items(), reverse=True)
            self._open.clear()
        for _, (step, token, thread) in left:  # control flow left it: a time limit, a retry
            step.set_status(StatusCode.ERROR, "the execution ended while the step ran")
            step.end()
            if thread == me:
                context.detach(token)
        span.set_attribute("durable.steps.replayed", self._replayed)
        span.set_attribute("durable.steps.new", self._new)
        span.set_attribute("durable.outcome", self._outcome or ("failed" if error else "ended"))
        if error is not None and self._outcome != "failed":
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        context.detach(self._token)
        span.end()
        self._span = None

    # -- Steps --------------------------------------------------------------------------

    def step_started(self, ex: Execution, index: int, kind: str, name: str, attempt: int) -> None:
        from opentelemetry import context, trace

        parent = trace.set_span_in_context(self._span) if self._span is not None else None
        span = self._tracer.start_span(
            f"durable.step {name}",
            context=parent,
            attributes={
                "durable.invocation_id": ex.id,
                "durable.step.index": index,
                "durable.step.name": name,
                "durable.step.kind": kind,
                "durable.step.attempt": attempt,
                "durable.step.replayed": False,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._open[index] = (span, token, threading.get_ident())

    def _close(self, index: int) -> Span | None:
        from opentelemetry import context

        with self._lock:
            opened = self._open.pop(index, None)
        if opened is None:
            return None
        span, token, thread = opened
        if thread == threading.get_ident():
            context.detach(token)
        return span

    def step_succeeded(
        self,
        ex: Execution,
        index: int,
        kind: str,
        name: str,
        attempts: int,
        value: Any,
        duration: float,
    ) -> None:
        with self._lock:
            self._new += 1
        span = self._close(index)
        if span is not None:
            span.end()
        elif self._span is not None:  # an operation without a function: no span of its own
            self._span.add_event("durable.step.journaled", _step_attributes(index, kind, name))

    def step_failed(
        self,
        ex: Execution,
        index: int,
        kind: str,
        name: str,
        attempts: int,
        error: BaseException,
        retry_in: float | None,
    ) -> None:
        from opentelemetry.trace import StatusCode

        if retry_in is None and index < len(ex.entries):  # journaled, not paused
            with self._lock:
                self._new += 1
        span = self._close(index)
        if span is None:  # journaled without running (a worker that kept dying)
            if self._span is None:
                return
            span = self._tracer.start_span(
                f"durable.step {name}",
                context=_context_of(self._span),
                attributes={
                    **_step_attributes(index, kind, name),
                    "durable.step.attempt": attempts,
                },
            )
        if retry_in is not None:
            span.set_attribute("durable.step.retry_in", retry_in)
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        span.end()

    def step_replayed(
        self,
        ex: Execution,
        index: int,
        kind: str,
        name: str,
        attempts: int,
        value: Any,
        error: BaseException | None,
    ) -> None:
        self._replayed += 1
        if self._span is not None:
            attributes = _step_attributes(index, kind, name)
            attributes["durable.step.replayed"] = True
            attributes["durable.step.failed"] = error is not None
            self._span.add_event("durable.step.replayed", attributes)

    # -- The invocation -----------------------------------------------------------------

    def invocation_suspended(self, ex: Execution, awaiting: list[dict[str, Any]]) -> None:
        self._outcome = "suspended"
        if self._span is not None:
            waits = [f"{a['kind']} {a['name']!r}" for a in awaiting]
            self._span.add_event("durable.suspended", {"durable.awaiting": waits})

    def invocation_paused(self, ex: Execution, reason: str) -> None:
        from opentelemetry.trace import StatusCode

        self._outcome = "paused"
        if self._span is not None:
            self._span.add_event("durable.paused", {"durable.reason": reason})
            self._span.set_status(StatusCode.ERROR, "paused")

    def invocation_completed(
        self, ex: Execution, status: str, result: Any, error: BaseException | None
    ) -> None:
        from opentelemetry.trace import StatusCode

        self._outcome = status
        if self._span is not None and error is not None:
            self._span.record_exception(error)
            self._span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")


def _step_attributes(index: int, kind: str, name: str) -> dict[str, Any]:
    return {"durable.step.index": index, "durable.step.name": name, "durable.step.kind": kind}


def _context_of(span: Span) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)
