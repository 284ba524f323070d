"""What an execution tells those who watch it: signals, spans, log lines.

The engine knows nothing of Celery or OpenTelemetry. It calls an ``Observer`` set on
the execution (``Execution.observer``) at the points below, and only when one is set:
the task layer sets one per execution when something listens (a connected signal,
tracing turned on, the ``celery_durable.steps`` logger at INFO), and leaves None
otherwise, so an unwatched step costs one ``is not None`` test per point.

Points, in the order an execution meets them:

- ``execution_started`` and ``execution_ended``: around one execution (the task layer).
- ``step_started``: before a step's function runs, for each attempt (kind ``run``).
- ``step_succeeded`` / ``step_failed``: a new journal entry. For ``run`` steps, the
  function's outcome; ``step_failed`` also when an attempt failed and is retried
  (``retry_in`` is then the delay, else None). For other kinds (``sleep``, ``call``,
  ``awakeable``, ``all``, ``any``) the entry that starts the timer, the child, the
  awakeable, or records the combinator's decision.
- ``step_replayed``: a journal entry handed back instead of run (any kind).
- ``invocation_suspended``, ``invocation_paused``, ``invocation_completed``.

Every journal entry is seen once as succeeded or failed, by the execution that wrote
it, and as replayed by every later one.

Step failures and retries are logged here too, on the ``celery_durable.steps`` logger,
whether an observer is set or not: they are off the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_durable.engine.execution import Execution

#: Per-step log lines: new steps at INFO, replayed steps and starts at DEBUG, retries at
#: INFO and failures at WARNING.
STEPS_LOGGER = logging.getLogger("celery_durable.steps")


class Observer:
    """Hears what one execution does. Every method does nothing here: override some."""

    __slots__ = ()

    def execution_started(self, ex: Execution) -> None:
        """The execution took the lease and is about to run the body."""

    def execution_ended(self, ex: Execution, error: BaseException | None) -> None:
        """The execution ended: returned (``error`` None) or raised ``error``, which may be
        Celery's control flow (a retry, ``Ignore`` for a suspension), not a failure."""

    def step_started(self, ex: Execution, index: int, kind: str, name: str, attempt: int) -> None:
        """A step's function is about to run; ``attempt`` counts from 1."""

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
        """A new entry is journaled with a value (``duration`` in seconds)."""

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
        """An attempt failed: retried after ``retry_in`` seconds, or journaled (None)."""

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
        """A journaled outcome was handed back without running anything."""

    def invocation_suspended(self, ex: Execution, awaiting: list[dict[str, Any]]) -> None:
        """The invocation waits for ``awaiting`` (timers, children, awakeables)."""

    def invocation_paused(self, ex: Execution, reason: str) -> None:
        """The invocation was paused (non-determinism) until someone resumes it."""

    def invocation_completed(
        self, ex: Execution, status: str, result: Any, error: BaseException | None
    ) -> None:
        """This execution finished the invocation: ``completed`` or ``failed``."""


class Fanout(Observer):
    """Tells several observers, in order."""

    __slots__ = ("observers",)

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def execution_started(self, ex: Execution) -> None:
        for o in self.observers:
            o.execution_started(ex)

    def execution_ended(self, ex: Execution, error: BaseException | None) -> None:
        for o in self.observers:
            o.execution_ended(ex, error)

    def step_started(self, ex: Execution, index: int, kind: str, name: str, attempt: int) -> None:
        for o in self.observers:
            o.step_started(ex, index, kind, name, attempt)

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
        for o in self.observers:
            o.step_succeeded(ex, index, kind, name, attempts, value, duration)

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
        for o in self.observers:
            o.step_failed(ex, index, kind, name, attempts, error, retry_in)

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
        for o in self.observers:
            o.step_replayed(ex, index, kind, name, attempts, value, error)

    def invocation_suspended(self, ex: Execution, awaiting: list[dict[str, Any]]) -> None:
        for o in self.observers:
            o.invocation_suspended(ex, awaiting)

    def invocation_paused(self, ex: Execution, reason: str) -> None:
        for o in self.observers:
            o.invocation_paused(ex, reason)

    def invocation_completed(
        self, ex: Execution, status: str, result: Any, error: BaseException | None
    ) -> None:
        for o in self.observers:
            o.invocation_completed(ex, status, result, error)


def combine(observers: Sequence[Observer]) -> Observer | None:
    """None for no observer, the observer itself for one, a ``Fanout`` for more."""
    if not observers:
        return None
    return observers[0] if len(observers) == 1 else Fanout(observers)


class LogObserver(Observer):
    """Per-step log lines that name the task, the invocation and the step.

    Set only when ``celery_durable.steps`` logs at INFO; failures are logged by the
    engine itself (``log_retry``, ``log_failure``), so they are not repeated here.
    Values are never logged: they may hold anything.
    """

    __slots__ = ("_task",)

    def __init__(self, task_name: str) -> None:
        self._task = task_name

    def step_started(self, ex: Execution, index: int, kind: str, name: str, attempt: int) -> None:
        STEPS_LOGGER.debug(
            "%s[%s] step %r (#%d) starts, attempt %d", self._task, ex.id, name, index, attempt
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
        if kind == "run":
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            STEPS_LOGGER.info(
                "%s[%s] step %r (#%d) journaled in %.1f ms%s",
                self._task, ex.id, name, index, duration * 1000, tries,
            )  # fmt: skip
        else:
            STEPS_LOGGER.info("%s[%s] %s %r (#%d) journaled", self._task, ex.id, kind, name, index)

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
        STEPS_LOGGER.debug(
            "%s[%s] %s %r (#%d) replayed%s",
            self._task, ex.id, kind, name, index, " (a recorded failure)" if error else "",
        )  # fmt: skip

    def invocation_completed(
        self, ex: Execution, status: str, result: Any, error: BaseException | None
    ) -> None:
        STEPS_LOGGER.debug(
            "%s[%s] %s after %d journal entries", self._task, ex.id, status, ex.position
        )


def log_retry(
    ex: Execution, index: int, name: str, attempt: int, error: BaseException, delay: float
) -> None:
    """Log a failed attempt of a step that will be retried after ``delay`` seconds."""
    STEPS_LOGGER.info(
        "%s step %r (#%d) failed on attempt %d, retrying in %.3g s: %s: %s",
        named(ex), name, index, attempt, delay, type(error).__name__, error,
    )  # fmt: skip


def log_failure(ex: Execution, index: int, name: str, attempts: int, error: BaseException) -> None:
    """Log a step failure that was journaled: the body gets it from ``ctx.run``."""
    kind = getattr(error, "error_type", type(error).__name__)
    message = getattr(error, "message", str(error))
    STEPS_LOGGER.warning(
        "%s step %r (#%d) failed for good after %d attempt(s): %s: %s",
        named(ex), name, index, attempts, kind, message,
    )  # fmt: skip


def log_pause(ex: Execution, reason: str) -> None:
    """Log that the invocation was paused for an operator (the reason says what to do)."""
    logging.getLogger("celery_durable").warning("%s paused: %s", named(ex), reason)


def named(ex: Execution) -> str:
    """How a log line names an execution's invocation: ``<task>[<id>]``, as Celery does."""
    return f"{ex.task_name}[{ex.id}]" if ex.task_name else f"invocation {ex.id}:"
