"""Flow control from outside: cancel invocations, one or by filter, and read who holds a
concurrency key and who waits. ``admin`` re-exports these; the ``cancel`` command and the
console call them (the mechanics are in ``cancelling`` and ``concurrency``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery_durable import cancelling, concurrency
from celery_durable.errors import InvocationStateError
from celery_durable.keys import LIVE_STATUSES
from celery_durable.listing import select_ids
from celery_durable.runtime import runtime_for

#: The reason of a cancel that gives none.
DEFAULT_REASON = "cancelled by an operator"


@dataclass(frozen=True, slots=True)
class CancelledInvocation:
    """What ``cancel_invocation`` did."""

    id: str
    previous_status: str
    """Its status before: ``running``, ``suspended`` or ``paused``."""
    killed: bool
    """``kill``: it ended now, ``cancelled``, without running its body. Else its body
    raises ``InvocationCancelled`` at its next durable operation (a suspended or paused
    one was woken for it), and it ends when the body does."""
    already: bool = False
    """It had been cancelled before (gracefully): the first reason stays; it was woken
    again if it waited."""
    children: list[str] = field(default_factory=list)
    """Its unfinished children, and theirs, that were cancelled (or killed) with it."""

    def as_dict(self) -> dict[str, Any]:
        """JSON types (``celery durable cancel --json``)."""
        return {
            "id": self.id,
            "previous_status": self.previous_status,
            "killed": self.killed,
            "already": self.already,
            "children": list(self.children),
        }


def cancel_invocation(
    app: Any, task_id: str, reason: str | None = None, kill: bool = False
) -> CancelledInvocation:
    """Cancel invocation ``task_id`` and its unfinished children (``ctx.call``), recursively.

    Gracefully by default: its body gets ``InvocationCancelled`` (a ``TerminalError``) at
    its next durable operation, once, so that a saga's ``except TerminalError`` runs its
    compensation; a suspended invocation is woken at once and raises where it waits, a
    paused one is released to run its compensation. A body that lets the error escape
    ends ``cancelled``; one that catches it and returns ends ``completed``.

    With ``kill``, it ends ``cancelled`` now without running anything more of its body,
    any execution still running it is fenced out, and its children are killed too.

    Args:
        app: The Celery app.
        task_id: The invocation's id.
        reason: Why, for the error's message and ``show``; "cancelled by an operator" if None.
        kill: End it now instead.

    Raises:
        InvocationStateError: it has finished, or is not kept; nothing was changed.
    """
    runtime = runtime_for(app)
    why = reason if reason else DEFAULT_REASON
    done = cancelling.cancel(app, runtime.store, task_id, why, kill, runtime.settings.retention)
    if done.state == "gone":
        raise InvocationStateError.not_kept(task_id, "cancel")
    if done.state == "finished":
        raise InvocationStateError(
            f"invocation {task_id} is {done.previous_status}: it has finished, and a cancel "
            "changes nothing."
        )
    children = [child.id for child in done.descendants() if child.state in ("requested", "killed")]
    return CancelledInvocation(task_id, done.previous_status, kill, done.already, children)


def cancel_invocations(
    app: Any,
    task: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    kill: bool = False,
    created_before: float | None = None,
) -> list[CancelledInvocation]:
    """Cancel every invocation that has not finished (of ``task``, of ``status``, created
    before a time), as ``cancel_invocation`` does; return what was cancelled.

    An invocation that finishes (or is cancelled as a child of another) between the
    listing and its cancel is skipped.

    Raises:
        ValueError: ``status`` is not one of ``running``, ``suspended``, ``paused``.
    """
    if status is not None and status not in LIVE_STATUSES:
        raise ValueError(
            f"status={status!r}: only an invocation that has not finished can be cancelled; "
            f"give one of {list(LIVE_STATUSES)}, or None for all three."
        )
    done: list[CancelledInvocation] = []
    seen: set[str] = set()
    for live in (status,) if status is not None else LIVE_STATUSES:
        for task_id in select_ids(app, live, task, created_before):
            if task_id in seen:
                continue
            try:
                cancelled = cancel_invocation(app, task_id, reason, kill)
            except InvocationStateError:
                continue  # it finished since it was listed
            seen.update([task_id, *cancelled.children])
            done.append(cancelled)
    return done


@dataclass(frozen=True, slots=True)
class ConcurrencySlots:
    """Who holds the slots of a concurrency key, and who waits (``concurrency_slots``)."""

    key: str
    holders: list[str]
    """By when they got their slot, earliest first."""
    waiting: list[str]
    """In the order they get a slot."""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "holders": self.holders, "waiting": self.waiting}


def concurrency_slots(app: Any, key: str) -> ConcurrencySlots:
    """Who holds the slots of concurrency key ``key``, and who waits for one, in order.

    A holder that finished, or died past its lease, is listed until a waiter finds it out
    (``concurrency`` checks holders lazily).
    """
    holders, waiting = runtime_for(app).store.slot_state(key)
    return ConcurrencySlots(key, holders, waiting)


def concurrency_key_of(stored: str | None) -> tuple[str, int] | None:
    """The key and limit an invocation keeps (``Invocation.concurrency_key`` is the key)."""
    return concurrency.decode(stored) if stored else None
