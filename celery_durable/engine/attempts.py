"""Failed attempts of a step: what is recorded, and whether to retry or give up.

A step's attempts are counted in the journal, not in memory, so that limits hold
across workers and redeliveries. A worker that dies during a step counts as a
failed attempt of that step, so a crash loop ends under the step's policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery_durable.errors import RetryableError
from celery_durable.policy import RetryPolicy

#: Error type recorded for attempts that ended with the worker's death.
WORKER_LOST = "WorkerLostError"


@dataclass(frozen=True, slots=True)
class Attempts:
    """The failed attempts of one step so far."""

    index: int
    name: str
    failures: int
    first_failure_at: float
    error: dict[str, Any]
    """The last failure: its type name and message."""
    limit: int | None = None
    """The step's ``max_attempts``, so that a start can judge deaths before the step is
    reached again (None: no limit)."""
    more: tuple[Attempts, ...] = ()
    """The attempts of the steps after this one, when a retry re-opened several at once
    (the ``run_async`` steps of a combinator; see ``engine.reopen``)."""

    def to_json(self) -> str:
        return json.dumps(self._raw(), separators=(",", ":"))

    def _raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "i": self.index,
            "n": self.name,
            "a": self.failures,
            "t": self.first_failure_at,
            "e": self.error,
            "l": self.limit,
        }
        if self.more:
            raw["m"] = [attempts._raw() for attempts in self.more]
        return raw

    @classmethod
    def from_json(cls, text: str) -> Attempts:
        return cls._from_raw(json.loads(text))

    @classmethod
    def _from_raw(cls, raw: dict[str, Any]) -> Attempts:
        more = tuple(cls._from_raw(m) for m in raw.get("m", ()))
        return cls(raw["i"], raw["n"], raw["a"], raw["t"], raw["e"], raw.get("l"), more)

    def of_step(self, index: int, name: str) -> Attempts | None:
        """The attempts recorded for step ``name`` at ``index``, here or among ``more``."""
        for attempts in (self, *self.more):
            if (attempts.index, attempts.name) == (index, name):
                return attempts
        return None

    def after(self, error: dict[str, Any], failures: int = 1) -> Attempts:
        """Return these attempts with ``failures`` more, the last one failing with ``error``."""
        return Attempts(
            self.index, self.name, self.failures + failures, self.first_failure_at, error,
            self.limit,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a failed attempt: retry after ``delay`` seconds, or give up."""

    give_up: bool
    delay: float
    reason: str = ""
    exhausted: bool = False
    """It gives up because the attempts or ``max_duration`` are used up (the policy's
    ``on_exhausted`` decides what follows), not because the error is not retried."""


def judge(
    policy: RetryPolicy,
    attempts: Attempts,
    error: BaseException | None,
    now: float,
    random: Callable[[], float],
) -> Verdict:
    """Decide whether a step that has failed ``attempts.failures`` times runs again.

    Args:
        policy: The step's retry policy.
        attempts: Its failed attempts, the latest included.
        error: The latest error, or None when the worker died.
        now: The current time, seconds since the epoch.
        random: A source of floats in [0, 1) for the policy's jitter.
    """
    if error is not None and not policy.retries(error):
        return Verdict(True, 0.0, "its policy does not retry this error")
    if policy.max_attempts is not None and attempts.failures >= policy.max_attempts:
        return Verdict(True, 0.0, f"all {policy.max_attempts} attempts failed", exhausted=True)
    # After a worker's death the redelivery is the retry: the step runs again at once.
    delay = 0.0 if error is None else policy.delay(attempts.failures, random)
    if isinstance(error, RetryableError) and error.retry_after is not None:
        delay = max(0.0, float(error.retry_after))
    if policy.max_duration is not None:
        deadline = attempts.first_failure_at + policy.max_duration
        if now + delay > deadline:
            return Verdict(
                True,
                0.0,
                f"the next attempt would start after max_duration={policy.max_duration}s",
                exhausted=True,
            )
    return Verdict(False, delay)
