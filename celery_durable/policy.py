"""Retry policies of steps, and the default one a task's Celery options imply."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from celery_durable.errors import ConfigurationError, RetryableError, TerminalError

#: What a policy may do once it is exhausted (``RetryPolicy.on_exhausted``).
ON_EXHAUSTED = ("fail", "pause")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is retried. Durations are seconds.

    The delay before attempt ``n + 1`` (after ``n`` failures) is
    ``min(initial_interval * factor ** (n - 1), max_interval)``, then shortened by
    up to ``jitter`` of itself at random.
    """

    max_attempts: int | None = 4
    """Attempts in all, the first one included; None for no limit."""
    max_duration: float | None = None
    """Seconds from the first failure after which no attempt starts; None for no limit."""
    initial_interval: float = 1.0
    """Seconds before the second attempt."""
    factor: float = 2.0
    """Multiplier of the delay after each further failure; 1 keeps it constant."""
    max_interval: float | None = 600.0
    """Longest delay between two attempts; None for no limit."""
    jitter: float = 0.0
    """Fraction of each delay taken off at random: 0 for none, 1 for full jitter."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Errors that are retried; any other one fails the step at once."""
    dont_retry_on: tuple[type[BaseException], ...] = ()
    """Errors that fail the step at once even though ``retry_on`` matches them."""
    on_exhausted: Literal["fail", "pause"] = "fail"
    """What happens once the attempts or ``max_duration`` are used up: ``"fail"``
    journals the last error and raises it from the step; ``"pause"`` journals nothing
    for the step, pauses the invocation (no compensation runs) and leaves it for an
    operator to resume after fixing the cause. Errors the policy does not retry, and
    ``TerminalError``, fail the step either way."""

    def __post_init__(self) -> None:
        def refuse(field: str, why: str) -> None:
            value = getattr(self, field)
            raise ConfigurationError(f"RetryPolicy({field}={value!r}): {why}")

        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            refuse("max_attempts", "must be an int of at least 1 (it counts the first attempt)")
        if self.max_duration is not None and not _positive(self.max_duration):
            refuse("max_duration", "must be a positive number of seconds, or None")
        if not _non_negative(self.initial_interval):
            refuse("initial_interval", "must be a number of seconds of at least 0")
        if not _non_negative(self.factor) or self.factor < 1:
            refuse("factor", "must be a number of at least 1")
        if self.max_interval is not None and not _non_negative(self.max_interval):
            refuse("max_interval", "must be a number of seconds of at least 0, or None")
        if not _non_negative(self.jitter) or self.jitter > 1:
            refuse("jitter", "must be a fraction between 0 and 1")
        for field in ("retry_on", "dont_retry_on"):
            types = getattr(self, field)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                refuse(field, "must be a tuple of exception classes")
        if self.on_exhausted not in ON_EXHAUSTED:
            refuse("on_exhausted", f"must be one of {list(ON_EXHAUSTED)}")

    def retries(self, error: BaseException) -> bool:
        """Return whether ``error`` is one this policy retries.

        A ``RetryableError`` is retried even when ``retry_on`` leaves it out, because it
        asks for it; ``dont_retry_on`` and ``TerminalError`` win over everything.
        """
        if isinstance(error, (TerminalError, *self.dont_retry_on)):
            return False
        return isinstance(error, (RetryableError, *self.retry_on))

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """Return the seconds to wait after ``failures`` failed attempts.

        Args:
            failures: Failed attempts so far, at least 1.
            random: A source of floats in [0, 1) for the jitter.
        """
        exponent = max(failures - 1, 0)
        try:
            base = self.initial_interval * self.factor**exponent
        except OverflowError:
            base = math.inf
        if self.max_interval is not None:
            base = min(base, self.max_interval)
        if self.jitter:
            base -= base * self.jitter * random()
        return base

    @classmethod
    def from_celery_options(cls, task: Any) -> RetryPolicy:
        """Return the policy under which Celery's autoretry would retry ``task``.

        A step that names no policy is retried the way Celery retries the task: errors in
        its ``autoretry_for`` (minus ``dont_autoretry_for``) and ``RetryableError``; any
        other error fails the step at once, as it fails a plain task at once.
        ``max_retries`` gives ``max_attempts`` (one more, for the first attempt). With
        ``retry_backoff`` the delays grow as Celery's autoretry grows them: from
        ``retry_backoff`` seconds, doubling, up to ``retry_backoff_max``, with full jitter
        when ``retry_jitter`` is on. Without it every delay is ``default_retry_delay``.
        ``retry_kwargs``' ``max_retries`` and ``countdown`` win, as they do in Celery.
        """
        retry_kwargs = getattr(task, "retry_kwargs", None) or {}
        max_retries = retry_kwargs.get("max_retries", getattr(task, "max_retries", 3))
        max_attempts = None if max_retries is None else int(max_retries) + 1
        retry_on = tuple(getattr(task, "autoretry_for", None) or ())
        dont_retry_on = tuple(getattr(task, "dont_autoretry_for", None) or ())
        backoff = getattr(task, "retry_backoff", False)
        if backoff:
            return cls(
                max_attempts=max_attempts,
                initial_interval=float(max(1, int(backoff))),
                factor=2.0,
                max_interval=float(getattr(task, "retry_backoff_max", 600)),
                jitter=1.0 if getattr(task, "retry_jitter", True) else 0.0,
                retry_on=retry_on,
                dont_retry_on=dont_retry_on,
            )
        delay = retry_kwargs.get("countdown", getattr(task, "default_retry_delay", 180))
        return cls(
            max_attempts=max_attempts,
            initial_interval=float(delay or 0),
            factor=1.0,
            max_interval=None,
            retry_on=retry_on,
            dont_retry_on=dont_retry_on,
        )


def _non_negative(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


def _positive(value: Any) -> bool:
    return _non_negative(value) and value > 0
