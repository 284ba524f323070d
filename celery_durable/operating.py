"""What operators do to invocations that stopped: resume, restart (a fork), purge.

Public through ``celery_durable.admin`` (and the package): the CLI and the console call
these, so the rules and the error messages are the same everywhere.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery_durable.errors import InvocationStateError
from celery_durable.flow import ENDED_FENCE_HEADER
from celery_durable.journal.records import Step, parse_step
from celery_durable.journal.store import Fork
from celery_durable.keys import MetaField
from celery_durable.listing import STATUSES
from celery_durable.runtime import runtime_for
from celery_durable.wakeups import decode_call, encode_call
from celery_durable.wakeups import publish as publish_call

#: Options of the original call that a restart (a new invocation) does not take: it is
#: not part of the original's canvas, and it has run no retries and no replacements.
_NOT_FORKED = frozenset({
    "root_id", "parent_id", "group_id", "group_index", "chord", "chain", "link",
    "link_error", "retries", "replaced_task_nesting",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Resumed:
    """What ``resume_invocation`` did."""

    id: str
    previous_status: str
    """``paused`` or ``failed``."""
    dropped_step: Step | None
    """The failed step a failed invocation lost (it runs again), if any."""
    published: bool
    """Whether its recorded call was published again."""


def resume_invocation(app: Any, task_id: str, publish: bool = True) -> Resumed:
    """Resume a paused or failed invocation, after the cause was fixed.

    One atomic change makes it resumable: it becomes ``paused`` without expiry and
    released to its next delivery (until then, a paused invocation's deliveries run
    nothing); a failed one loses its final outcome and, when its last journal entry is
    a failed step, that entry (the step runs again); deaths and recorded attempts are
    cleared, so steps get a fresh set of attempts. Then its recorded call (task name,
    arguments, execution options, without ``expires``) is published under its task
    id, and a worker runs it from its journal: finished steps replay.

    Args:
        app: The Celery app.
        task_id: The invocation's id.
        publish: False to only make it resumable; then sending the task again with the
            same task id and arguments runs it.

    Raises:
        InvocationStateError: it is gone, neither paused nor failed, or has no recorded
            call to publish; nothing was changed.
    """
    store = runtime_for(app).store
    if publish:
        reason = "resumed by an operator; it runs when a worker takes its message"
    else:
        reason = (
            "made resumable by an operator; send the task again with the same task id and "
            "arguments to run it"
        )
    done = store.resume(task_id, reason, require_call=publish)
    if done.state == "gone":
        raise InvocationStateError.not_kept(task_id, "resume")
    if done.state == "refused":
        raise InvocationStateError(
            f"invocation {task_id} is {done.status}; only a paused or failed invocation can be "
            f"resumed. {_HINTS.get(done.status, '')}".rstrip()
        )
    if done.state == "dropped":
        raise InvocationStateError(
            f"invocation {task_id} is {done.status}, but its steps were dropped after "
            "durable_journal_retention; only its outcome is kept. Resuming it would run "
            "every step again, so nothing was changed. Send the task again with a new "
            "task id to run it anew."
        )
    if done.state == "no-call":
        raise InvocationStateError(
            f"invocation {task_id} is {done.status} but has no recorded call to publish (it "
            "ended before one was kept, e.g. at a hard time limit). Nothing was changed. Run "
            f"`celery -A <your app> durable resume --no-publish {task_id}` "
            "(resume_invocation(app, id, publish=False)) and send the task again with the same "
            "task id and arguments."
        )
    if publish:
        publish_call(app, _reopened(done.call))
    dropped = None
    if done.dropped is not None:
        dropped = parse_step(done.dropped_at, done.dropped)
    return Resumed(task_id, done.status, dropped, publish)


def restart_invocation(
    app: Any, task_id: str, from_step: int, new_id: str | None = None, publish: bool = True
) -> str:
    """Run an invocation again from step ``from_step``, as a new invocation (a fork).

    The new invocation's journal is a copy of the first ``from_step`` entries of
    ``task_id`` (with the outcomes of children and awakeables among them), with the
    same task, arguments and seed; it is published under ``new_id`` with the original
    call's arguments and options (not its chain, chord, group or callbacks). Entries
    before ``from_step`` replay; steps from ``from_step`` on run again. The original
    is left as it is. ``ctx.rand`` draws the same values in the fork as in the original.
    The fork is created paused and released to its first delivery: with ``publish``
    False, sending the task under ``new_id`` with the same arguments runs it.

    Returns:
        The new invocation's id (``new_id``, or a new uuid4).

    Raises:
        InvocationStateError: ``task_id`` is gone or has no recorded call yet,
            ``from_step`` is out of range or after a child that has not finished, or
            ``new_id`` is taken; nothing was changed.
    """
    store = runtime_for(app).store
    found = store.read(task_id)
    if found is None:
        raise InvocationStateError.not_kept(task_id, "restart")
    meta, entries, completions = found
    steps_until = meta.get(MetaField.STEPS_UNTIL)
    if steps_until and int(steps_until) <= time.time() * 1000:
        raise InvocationStateError(
            f"invocation {task_id} is {meta.get(MetaField.STATUS)}, but its steps (journal, "
            "arguments and options) were dropped after durable_journal_retention; only its "
            "outcome is kept, and a restart needs the steps. Send the task again yourself "
            "with a new task id."
        )
    if isinstance(from_step, bool) or not isinstance(from_step, int):
        raise InvocationStateError(f"from_step={from_step!r} must be an int.")
    if not 0 <= from_step <= len(entries):
        raise InvocationStateError(
            f"invocation {task_id} has {len(entries)} journal entries; restart it from a step "
            f"between 0 (run it all again) and {len(entries)}, not {from_step}."
        )
    call = meta.get(MetaField.CALL)
    if not call:
        raise InvocationStateError(
            f"invocation {task_id} is {meta.get(MetaField.STATUS)} and has no recorded call "
            "yet: it keeps one once it suspends, pauses, fails or completes (not when a hard "
            "time limit killed it). Restart it then, or send the task again yourself with a "
            "new task id."
        )
    kept = entries[:from_step]
    for index, text in enumerate(kept):
        kind = parse_step(index, text).kind
        if kind == "cancel":
            raise InvocationStateError(
                f"invocation {task_id} raised a cancel at step {index}; a fork is not "
                f"cancelled, so restart it from step {index} or earlier."
            )
        if kind == "call" and str(index) not in completions:
            raise InvocationStateError(
                f"the child task started at step {index} of invocation {task_id} has not "
                f"finished, and its outcome would never reach the fork; restart from step "
                f"{index} or earlier, or wait until it has finished."
            )
    new_id = new_id or str(uuid.uuid4())
    forked_call = _reopened(call, new_id)
    fork = Fork(
        task_name=meta[MetaField.TASK],
        fingerprint=meta[MetaField.FINGERPRINT],
        seed=int(meta[MetaField.SEED]),
        entries=kept,
        completions={
            k: v
            for k, v in completions.items()
            if k.split(":")[0].isdigit() and int(k.split(":")[0]) < from_step
        },
        call=forked_call,
        reason=(
            f"restarted from invocation {task_id} at step {from_step}; it runs when a worker "
            "takes its message"
        ),
    )
    if not store.fork(new_id, fork):
        raise InvocationStateError(
            f"task id {new_id} already names an invocation; pick another --new-id, or leave "
            "it out for a new uuid."
        )
    if publish:
        publish_call(app, forked_call)
    return new_id


def purge_invocations(
    app: Any,
    status: str,
    older_than: float | timedelta,
    now: float | None = None,
    limit: int | None = None,
) -> list[str]:
    """Delete the invocations of ``status`` created more than ``older_than`` ago.

    Each one is checked and deleted in one atomic change, so one that moved to another
    status since it was listed is kept.

    Args:
        app: The Celery app.
        status: One of ``STATUSES``.
        older_than: Seconds, or a ``timedelta``.
        now: The time to count from (seconds since the epoch); now if None.
        limit: Delete at most this many, and return: calls with the same ``now`` go on
            where the last one stopped (a purge in batches).

    Returns:
        The ids of the deleted invocations, oldest first.
    """
    if status not in STATUSES:
        raise ValueError(f"status={status!r} must be one of {list(STATUSES)}")
    seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"older_than={older_than!r} must be a number of seconds of at least 0")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a whole number of at least 1, or None")
    before = (time.time() if now is None else now) - seconds
    store = runtime_for(app).store
    purged: list[str] = []
    offset = 0
    while ids := store.list_ids_before(status, before, 500, offset):
        for task_id in ids:
            if limit is not None and len(purged) >= limit:
                return purged
            outcome = store.forget_if(task_id, status, before)
            if outcome == 1:
                purged.append(task_id)
            elif outcome == 0:
                offset += 1  # kept: it stays in the listing
    return purged


_HINTS = {
    "running": "It is running (or waits for a worker to take its message): it goes on by itself.",
    "suspended": "It waits for a timer, a child or an awakeable, and goes on when that comes.",
    "completed": "To run it again from a step, restart it: `celery -A <your app> durable "
    "restart ID --from-step N`.",
    "cancelled": "It was cancelled (or revoked); to run it again from a step, restart it: "
    "`celery -A <your app> durable restart ID --from-step N`.",
    "replaced": "It handed its task id to its replacement (Task.replace).",
}


def _reopened(call: str, new_id: str | None = None) -> str:
    """A stored call, as an operator publishes it: now (no ``expires``), under its id or,
    for a fork, as a new invocation under ``new_id``."""
    decoded = decode_call(call)
    options = {k: v for k, v in decoded["options"].items() if k != "expires"}
    headers = {k: v for k, v in (options.get("headers") or {}).items() if k != ENDED_FENCE_HEADER}
    options["headers"] = headers
    if new_id is not None:
        options = {k: v for k, v in options.items() if k not in _NOT_FORKED}
        options["task_id"] = new_id
    return encode_call(decoded["task"], decoded["args"], decoded["kwargs"], options)
