"""Deadlines: an invocation that has existed longer than its timeout is cancelled.

A task's ``durable_timeout`` (seconds), or the ``timeout`` its parent gave it
(``ctx.call(sig, timeout=...)``), is turned into a deadline when the invocation is
created: its creation plus the timeout, in its metadata (``MetaField.DEADLINE``) and in
a sorted set of deadlines of its hash slot. It counts the time the invocation spends
suspended, paused or waiting for a worker, and holds across workers and restarts.

The workers' sweep (``worker.Recovery``, one worker at a time) reads the deadlines that
have passed and cancels those invocations gracefully, as ``cancel_invocation`` does,
with a reason that names the deadline: a suspended one is woken to raise
``InvocationCancelled`` where it waits, and its unfinished children are cancelled too.
Each deadline is acted on once (``cancel.lua`` drops it); one of an invocation that
finished first changes nothing.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from celery_durable import cancelling
from celery_durable.errors import ConfigurationError
from celery_durable.journal.store import JournalStore

logger = logging.getLogger("celery_durable")

#: Deadlines cancelled per round trip of the sweep.
PAGE = 100


def timeout_of(task: Any, given: Any) -> float:
    """Seconds from creation to the deadline of an invocation of ``task``: ``given`` (a
    parent's ``timeout``, from the message) or the task's ``durable_timeout``; 0 for none.

    Raises:
        ConfigurationError: the task's ``durable_timeout`` is not a number of seconds.
    """
    if given is not None:
        try:
            return max(0.0, float(given))
        except (TypeError, ValueError):
            logger.warning("celery-durable: %s: ignored a timeout of %r from its message",
                           task.name, given)  # fmt: skip
    timeout = getattr(task, "durable_timeout", None)
    if timeout is None:
        return 0.0
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ConfigurationError(
            f"{task.name}: durable_timeout={timeout!r} must be a finite number of seconds "
            "above 0 (from the invocation's creation to its deadline), or None for none."
        )
    return float(timeout)


def enforce(app: Any, store: JournalStore, retention: float) -> float:
    """Cancel every invocation whose deadline has passed; return the seconds until the
    next deadline (-1 when none is kept).

    Raises:
        JournalError: the journal's Redis could not be reached.
    """
    while True:
        due, wait = store.due_deadlines(PAGE)
        failed = False
        for task_id, deadline in due:
            when = datetime.fromtimestamp(deadline, UTC).isoformat(timespec="milliseconds")
            reason = f"its deadline passed at {when} (durable_timeout)"
            try:
                done = cancelling.cancel(app, store, task_id, reason, False, retention)
            except Exception as exc:
                # Still listed: the next sweep tries again.
                logger.warning("celery-durable: could not cancel %s at its deadline: %s",
                               task_id, exc)  # fmt: skip
                failed = True
                continue
            if done.state == "requested":
                logger.warning("celery-durable: invocation %s: %s; cancelled it", task_id, reason)
        if len(due) < PAGE or failed:
            return 0.0 if due else wait
