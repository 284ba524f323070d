"""Signals of durable executions, as Celery's own (``celery.signals``) are.

Connect a receiver as for any Celery signal; ``sender`` is the task (a
``DurableTask`` instance) and every argument is passed by keyword::

    from celery_durable import signals

    @signals.step_failed.connect
    def on_step_failed(sender, invocation_id, name, error, retry_in, **kwargs):
        metrics.increment("step_failed", tags={"task": sender.name, "step": name})

Whether any receiver is connected is checked once when an execution starts, and
again before each send: with none connected nothing is built or sent. Receivers
run in the execution's thread (for a ``ctx.run_async`` step, in the step's thread);
an error in one is logged by Celery and does not reach the task.

Step signals carry ``invocation_id`` (the task id), ``index`` (the journal position),
``name`` and ``kind`` (``run`` for a step whose function runs; ``sleep``, ``call``,
``awakeable``, ``all``, ``any`` for the other journaled operations):

- ``step_started(attempt)``: a step's function is about to run (kind ``run``), once per
  attempt, ``attempt`` counting from 1.
- ``step_succeeded(attempts, value, duration)``: a new entry was journaled. For a
  ``run`` step ``value`` is what ``ctx.run`` returns (decoded from the journal) and
  ``duration`` the seconds since it started; for other kinds ``value`` is the entry's
  JSON (``{"until": ms}`` for a timer, ``{"id": ..., "task": ...}`` for a child call)
  and ``duration`` 0.
- ``step_failed(attempts, error, retry_in)``: an attempt failed. ``retry_in`` is the
  delay before the next attempt, or None when none follows: the failure was journaled
  (``error`` is then what ``ctx.run`` raises: an instance of the original type and a
  ``TerminalError``), or the policy paused the invocation (``on_exhausted="pause"``;
  ``invocation_paused`` follows).
- ``step_replayed(attempts, value, error)``: a journaled entry was handed back without
  running anything (``value`` or ``error`` as recorded; for kinds other than ``run``,
  the entry's JSON).

Invocation signals:

- ``invocation_suspended(awaiting)``: the invocation waits for timers, children or
  awakeables (a list of ``{"index", "kind", "name"[, "until"]}``), its worker slot free.
- ``invocation_paused(reason)``: it was paused (non-determinism, or a policy exhausted
  with ``on_exhausted="pause"``) until an operator resumes it.
- ``invocation_completed(status, result, error)``: this execution finished it,
  ``status`` ``completed`` (with ``result``) or ``failed`` (with ``error``). Endings
  that no execution journals itself (a revocation, a hard time limit, a crash loop
  judged at the start) send nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.utils.dispatch import Signal

from celery_durable.engine.execution import Execution
from celery_durable.engine.observer import STEPS_LOGGER, LogObserver, Observer, combine
from celery_durable.tracing import observer as span_observer

__all__ = (
    "invocation_completed",
    "invocation_paused",
    "invocation_suspended",
    "step_failed",
    "step_replayed",
    "step_started",
    "step_succeeded",
)

_STEP = {"invocation_id", "index", "name", "kind"}

step_started = Signal(name="step_started", providing_args=_STEP | {"attempt"})
step_succeeded = Signal(
    name="step_succeeded", providing_args=_STEP | {"attempts", "value", "duration"}
)
step_failed = Signal(name="step_failed", providing_args=_STEP | {"attempts", "error", "retry_in"})
step_replayed = Signal(name="step_replayed", providing_args=_STEP | {"attempts", "value", "error"})
invocation_suspended = Signal(
    name="invocation_suspended", providing_args={"invocation_id", "awaiting"}
)
invocation_paused = Signal(name="invocation_paused", providing_args={"invocation_id", "reason"})
invocation_completed = Signal(
    name="invocation_completed", providing_args={"invocation_id", "status", "result", "error"}
)

_ALL = (
    step_started,
    step_succeeded,
    step_failed,
    step_replayed,
    invocation_suspended,
    invocation_paused,
    invocation_completed,
)


class SignalObserver(Observer):
    """Sends the signals above for one execution of ``task``, to connected receivers only."""

    __slots__ = ("_task",)

    def __init__(self, task: Any) -> None:
        self._task = task

    def step_started(self, ex: Execution, index: int, kind: str, name: str, attempt: int) -> None:
        if step_started.receivers:
            step_started.send(
                self._task, invocation_id=ex.id, index=index, name=name, kind=kind, attempt=attempt
            )

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
        if step_succeeded.receivers:
            step_succeeded.send(
                self._task, invocation_id=ex.id, index=index, name=name, kind=kind,
                attempts=attempts, value=value, duration=duration,
            )  # fmt: skip

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
        if step_failed.receivers:
            step_failed.send(
                self._task, invocation_id=ex.id, index=index, name=name, kind=kind,
                attempts=attempts, error=error, retry_in=retry_in,
            )  # fmt: skip

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
        if step_replayed.receivers:
            step_replayed.send(
                self._task, invocation_id=ex.id, index=index, name=name, kind=kind,
                attempts=attempts, value=value, error=error,
            )  # fmt: skip

    def invocation_suspended(self, ex: Execution, awaiting: list[dict[str, Any]]) -> None:
        if invocation_suspended.receivers:
            invocation_suspended.send(self._task, invocation_id=ex.id, awaiting=awaiting)

    def invocation_paused(self, ex: Execution, reason: str) -> None:
        if invocation_paused.receivers:
            invocation_paused.send(self._task, invocation_id=ex.id, reason=reason)

    def invocation_completed(
        self, ex: Execution, status: str, result: Any, error: BaseException | None
    ) -> None:
        if invocation_completed.receivers:
            invocation_completed.send(
                self._task, invocation_id=ex.id, status=status, result=result, error=error
            )


def observer_for(task: Any) -> Observer | None:
    """What watches an execution of ``task`` now: signals with receivers, tracing if it is
    on, per-step log lines if ``celery_durable.steps`` logs at INFO; None for nothing."""
    found: list[Observer] = []
    if any(signal.receivers for signal in _ALL):
        found.append(SignalObserver(task))
    spans = span_observer(task.name)
    if spans is not None:
        found.append(spans)
    if STEPS_LOGGER.isEnabledFor(logging.INFO):
        found.append(LogObserver(task.name))
    return combine(found)
