"""Pausing instead of failing: a step whose policy is exhausted, with ``on_exhausted="pause"``.

Restate's ``on_max_attempts = "pause"``: once a step's attempts (or its
``max_duration``) are used up, nothing is journaled for it, no compensation runs,
and the invocation is left ``paused`` with its failed attempts recorded, for an
operator to resume after fixing the cause (``celery durable resume``). The body
cannot catch the ``Paused`` signal that ends the execution.
"""

from __future__ import annotations

from typing import NoReturn

from celery_durable.engine.attempts import Attempts
from celery_durable.engine.execution import Execution
from celery_durable.journal.failures import rebuild


def pause_exhausted(
    ex: Execution,
    index: int,
    name: str,
    attempts: Attempts,
    why: str,
    call: str,
    failure: BaseException | None = None,
) -> NoReturn:
    """Pause the invocation because step ``name`` used up its policy, and end the execution.

    Args:
        ex: The execution.
        index: The step's journal index.
        name: The step's name.
        attempts: Its failed attempts, the last one included; recorded with the pause.
        why: Why the policy gave up (``Verdict.reason``).
        call: What re-publishes the invocation, so that it can be resumed.
        failure: What the last attempt raised; None when the worker died in it.

    Raises:
        Paused: always.
    """
    error = attempts.error
    if ex.observer is not None:  # the last attempt failed too: no retry follows
        failed = failure if failure is not None else rebuild(error)
        ex.observer.step_failed(ex, index, "run", name, attempts.failures, failed, None)
    reason = (
        f"step {name!r} (index {index}) gave up: {why}; the last attempt raised "
        f"{error.get('type')}: {error.get('message')}. "
        "Its policy says on_exhausted='pause': nothing was journaled for the step and no "
        "compensation ran. Fix the cause, then resume it with "
        f"`celery -A <your app> durable resume {ex.id}` (or celery_durable.resume_invocation); "
        "the step runs again with a fresh set of attempts."
    )
    ex.pause(reason, call, attempts.to_json())
