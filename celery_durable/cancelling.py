"""Cancelling an invocation and its children: gracefully, or by killing them.

A graceful cancel (``JournalStore.cancel``) marks the invocation, and makes sure an
execution comes to raise ``InvocationCancelled`` in its body (``engine.cancel``): a
suspended or paused one is woken, a running one that nothing holds is published. Its
children that have not finished (``ctx.call``) are cancelled the same way, and theirs:
one invocation per script, as on a Redis Cluster. The parent's execution cancels them
again when it raises the cancel, for those it started before it heard of it.

A child that has no journal yet (its message waits in a queue) or never will (a plain
Celery task) cannot take a cancel: the parent's future for it is completed at once with
the cancellation, and its message is revoked (Celery's ``revoke``: a worker that gets it
drops it; one already running runs to its end, and its outcome is dropped).

A kill ends the invocation now, without running its body: journaled ``cancelled`` with
an ``InvocationCancelled`` (``JournalStore.finish``, which fences out any execution still
running it), its result backend told, its parent told (through its own ``link_error``,
as a failure would), its concurrency slot handed on, and its children killed too.

Every step is one atomic change that a finish races safely: the first one wins.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from celery_durable import concurrency
from celery_durable.engine.calls import child_id
from celery_durable.errors import InvocationCancelled, LeaseLost
from celery_durable.journal.entries import encode_completion, encode_outcome, parse
from celery_durable.journal.failures import record_of
from celery_durable.journal.store import JournalStore
from celery_durable.keys import MetaField
from celery_durable.runtime import journal_retention_for
from celery_durable.wakeups import decode_call, publish, publish_due

logger = logging.getLogger("celery_durable")

#: What a child's ``link_error`` is when its parent started it with ``ctx.call``.
CHILD_FAILED = "celery_durable.child_failed"


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What cancelling one invocation did."""

    id: str
    state: Literal["requested", "killed", "finished", "gone"]
    """``requested``: it raises ``InvocationCancelled`` at its next durable operation;
    ``killed``: it ended now; ``finished``: it had finished, nothing changed; ``gone``:
    no such invocation."""
    previous_status: str = ""
    already: bool = False
    """It was cancelled before (graceful): the first reason stays."""
    published: bool = False
    """It was woken or published, for an execution to raise the cancel."""
    children: list[Cancelled] = field(default_factory=list)
    """What cancelling its unfinished children did, and theirs."""

    def descendants(self) -> list[Cancelled]:
        """Its children, theirs, and so on, depth first."""
        found: list[Cancelled] = []
        for child in self.children:
            found += [child, *child.descendants()]
        return found


def cancel(
    app: Any, store: JournalStore, task_id: str, reason: str, kill: bool, retention: float
) -> Cancelled:
    """Cancel ``task_id`` and its unfinished children, recursively (see the module)."""
    if kill:
        return _kill(app, store, task_id, reason, retention)
    done = store.cancel(task_id, reason)
    if done.state != "requested":
        return Cancelled(task_id, done.state, done.status)
    if done.woken:
        publish_due(app, store)
    if done.call:
        publish(app, done.call)
    children = cancel_children(app, store, task_id, _unfinished(store, task_id), reason, False,
                               retention)  # fmt: skip
    return Cancelled(task_id, "requested", done.status, done.already,
                     done.woken or bool(done.call), children)  # fmt: skip


def cancel_children(
    app: Any,
    store: JournalStore,
    parent: str,
    children: list[tuple[int, str]],
    reason: str,
    kill: bool,
    retention: float,
) -> list[Cancelled]:
    """Cancel the children ``(journal index, id)`` of ``parent``, recursively."""
    why = f"its parent {parent} was cancelled: {reason}"
    found = []
    for index, child in children:
        done = cancel(app, store, child, why, kill, retention)
        if done.state == "gone":
            _drop_unstarted(app, store, parent, index, child, why, kill)
        found.append(done)
    return found


def _unfinished(store: JournalStore, task_id: str) -> list[tuple[int, str]]:
    """The children ``(index, id)`` that ``task_id``'s journal started and that have not
    finished (no outcome in its completions)."""
    stored = store.read(task_id)
    if stored is None:
        return []
    _, entries, completions = stored
    found = []
    for index, text in enumerate(entries):
        if text.startswith('{"k":"call",') and str(index) not in completions:
            found.append((index, str(parse(text)["v"]["id"])))
    return found


def _proof(store: JournalStore, parent: str, index: int) -> str:
    """What completes the parent's call at ``index``: its secret token, as journaled; the
    child's id for a call journaled before calls had one."""
    stored = store.read(parent)
    token = None
    if stored is not None and index < len(stored[1]):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            token = parse(stored[1][index])["v"].get("token")
    return token if isinstance(token, str) and token else child_id(parent, index)


def _drop_unstarted(
    app: Any, store: JournalStore, parent: str, index: int, child: str, why: str, kill: bool
) -> None:
    """A child with no journal: its parent's future raises the cancellation now, and its
    message is revoked."""
    if not kill:
        outcome = encode_completion(None, record_of(InvocationCancelled.because(why)), time.time())
        if store.complete(parent, index, "call", _proof(store, parent, index), outcome) == 2:
            publish_due(app, store)
    try:
        app.control.revoke(child)
    except Exception as exc:  # the broker is down: its worker runs it, and nobody waits
        logger.warning("celery-durable: could not revoke child %s: %s", child, exc)


def _kill(app: Any, store: JournalStore, task_id: str, reason: str, retention: float) -> Cancelled:
    stored = store.read(task_id)
    if stored is None:
        return Cancelled(task_id, "gone")
    meta = stored[0]
    status = meta.get(MetaField.STATUS, "")
    error = InvocationCancelled.because(reason)
    record = record_of(error)
    try:
        earlier = store.finish(
            task_id, None, "cancelled", encode_outcome("json", None, record), retention,
            journal_retention=journal_retention_for(app, meta.get(MetaField.TASK, "")),
        )  # fmt: skip
    except LeaseLost:
        return Cancelled(task_id, "gone")  # forgotten since it was read
    if earlier is not None:
        return Cancelled(task_id, "finished", earlier[0])
    if meta.get(MetaField.CONCURRENCY_KEY):
        key, limit = concurrency.decode(meta[MetaField.CONCURRENCY_KEY])
        concurrency.release(app, store, task_id, key, limit)
    _tell_others(app, store, task_id, meta.get(MetaField.CALL, ""), error)
    children = cancel_children(app, store, task_id, _unfinished(store, task_id), reason, True,
                               retention)  # fmt: skip
    return Cancelled(task_id, "killed", status, children=children)


def _tell_others(
    app: Any, store: JournalStore, task_id: str, call: str, error: InvocationCancelled
) -> None:
    """What a failure of a killed invocation would have told: its result backend, and the
    parent that waits for it (its ``link_error``). Its other error callbacks are not run."""
    try:
        app.backend.mark_as_failure(task_id, error, call_errbacks=False)
    except Exception as exc:  # no result backend, or it is down: nobody reads it then
        logger.warning("celery-durable: could not store the cancel of %s as its result: %s",
                       task_id, exc)  # fmt: skip
    if not call:
        return
    outcome = encode_completion(None, record_of(error), time.time())
    for errback in decode_call(call)["options"].get("link_error") or ():
        if isinstance(errback, dict) and errback.get("task") == CHILD_FAILED:
            where = errback.get("kwargs") or {}
            parent, index = str(where.get("parent")), int(where.get("index", -1))
            # The call's secret token (children.CeleryHost.publish_call); a call journaled
            # before calls had one is completed by its child's id.
            proof = str(where.get("token") or child_id(parent, index))
            if store.complete(parent, index, "call", proof, outcome) == 2:
                publish_due(app, store)
