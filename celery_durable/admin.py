"""Operating invocations from outside: read, forget, resume, restart and purge journals,
complete awakeables. The ``celery durable`` commands (``cli``) and the console (``web``)
call these; listings are in ``listing``, cancels and concurrency keys in ``control``,
resume, restart and purge in ``operating``, all re-exported here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery_durable.codec import PLAIN_JSON
from celery_durable.control import CancelledInvocation as CancelledInvocation
from celery_durable.control import ConcurrencySlots as ConcurrencySlots
from celery_durable.control import cancel_invocation as cancel_invocation
from celery_durable.control import cancel_invocations as cancel_invocations
from celery_durable.control import concurrency_slots as concurrency_slots
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.engine.calls import child_id as child_id
from celery_durable.errors import AwakeableError, CodecError, TerminalError
from celery_durable.journal.entries import check_size, encode_completion
from celery_durable.journal.failures import record_of
from celery_durable.journal.records import (
    Invocation,
    awakeable_token,
    parse_invocation,
)
from celery_durable.journal.store import JournalStore
from celery_durable.keys import MetaField
from celery_durable.listing import MAX_LIMIT as MAX_LIMIT
from celery_durable.listing import STATUSES as STATUSES
from celery_durable.listing import SummaryPage as SummaryPage
from celery_durable.listing import count_invocations as count_invocations
from celery_durable.listing import list_summaries as list_summaries
from celery_durable.listing import select_ids as select_ids
from celery_durable.listing import summaries_of as summaries_of
from celery_durable.operating import Resumed as Resumed
from celery_durable.operating import purge_invocations as purge_invocations
from celery_durable.operating import restart_invocation as restart_invocation
from celery_durable.operating import resume_invocation as resume_invocation
from celery_durable.runtime import runtime_for
from celery_durable.wakeups import decode_call, publish_due


def get_invocation(app: Any, task_id: str) -> Invocation | None:
    """Return the invocation with Celery task id ``task_id``, or None if none is kept.

    An eager execution's journal (``apply()``, ``task_always_eager``, kept in this
    process by default) is found as a worker's is.
    """
    for store in _journal_stores(app):
        found = store.read(task_id)
        if found is not None:
            return _parsed(task_id, *found)
    return None


def list_invocations(
    app: Any, status: str | None = None, limit: int = 100, task_name: str | None = None
) -> list[Invocation]:
    """Return up to ``limit`` (at most ``MAX_LIMIT``) kept invocations, newest first,
    optionally of one status and of one task, with their journals; eager executions'
    journals in this process among them.

    Only the journals of the invocations returned are read; ``list_summaries`` reads
    none.
    """
    runtime = runtime_for(app)
    stores = _journal_stores(app)
    found: list[Invocation] = []
    for store in stores:
        if store is runtime.eager_store:  # (runtime.store would make a Redis client)
            found += _listed(store, status, limit, task_name)
            continue
        page = list_summaries(app, status=status, task_name=task_name, limit=limit)
        ids = [summary.id for summary in page.invocations]
        records = store.read_many(ids) if ids else []
        found += [
            _parsed(task_id, *record)
            for task_id, record in zip(ids, records, strict=True)
            if record is not None
        ]
    if len(stores) > 1:
        found.sort(key=lambda inv: inv.created_at or _EPOCH, reverse=True)
    return found[:limit]


def _journal_stores(app: Any) -> list[JournalStore]:
    """Where ``app``'s journals are: the eager ones of this process, if any, and Redis,
    unless the app runs every task eagerly in memory and names no Redis (a test's app
    with a ``memory://`` broker: it must not reach for a Redis nobody named)."""
    runtime = runtime_for(app)
    eager_only = (
        bool(app.conf.task_always_eager)
        and runtime.settings.eager_journal == "memory"
        and not runtime.settings.redis_url
    )
    if eager_only:
        return [runtime.eager_store]
    stores: list[JournalStore] = []
    if runtime.eager_store.list_ids(None, 1):
        stores.append(runtime.eager_store)
    stores.append(runtime.store)
    return stores


_EPOCH = datetime.fromtimestamp(0, UTC)


def _listed(
    store: JournalStore, status: str | None, limit: int, task_name: str | None
) -> list[Invocation]:
    """``list_invocations`` in one store."""
    found: list[Invocation] = []
    offset = 0
    while len(found) < limit:
        ids = store.list_ids(status, max(limit, 100), offset)
        if not ids:
            break
        offset += len(ids)
        records = store.read_many(ids)
        # Finished invocations expire on their own; their ids linger in the index.
        store.forget_index([i for i, r in zip(ids, records, strict=True) if r is None])
        offset -= sum(r is None for r in records)
        for task_id, record in zip(ids, records, strict=True):
            if record is None or (status is not None and record[0].get("status") != status):
                continue
            if task_name is None or record[0].get("task") == task_name:
                found.append(_parsed(task_id, *record))
    return found[:limit]


@dataclass(frozen=True, slots=True)
class InvocationDetails:
    """An invocation with what an operator needs beside its journal (``describe_invocation``)."""

    invocation: Invocation
    call: dict[str, Any] | None
    """Its recorded call: ``task``, ``args``, ``kwargs``, ``options``; None until it keeps
    one (it does once it suspends, pauses, fails or completes)."""
    awakeable_ids: dict[int, str]
    """The ids that complete its awakeables still waiting, by journal index."""


def describe_invocation(app: Any, task_id: str) -> InvocationDetails | None:
    """Return ``task_id``'s invocation, its recorded call and the ids of its waiting
    awakeables (one read), or None if none is kept."""
    found = runtime_for(app).store.read(task_id)
    if found is None:
        return None
    meta, entries, _ = found
    invocation = parse_invocation(task_id, *found)
    awakeables = {
        step.index: str(AwakeableId(task_id, step.index, token))
        for step in invocation.steps
        if step.kind == "awakeable"
        and step.status == "waiting"
        and step.index < len(entries)
        and (token := awakeable_token(entries[step.index])) is not None
    }
    call = decode_call(meta[MetaField.CALL]) if meta.get(MetaField.CALL) else None
    return InvocationDetails(invocation, call, awakeables)


def _parsed(
    task_id: str, meta: dict[str, str], entries: list[str], completions: dict[str, str]
) -> Invocation:
    """The ``Invocation`` stored, each awaited awakeable with the id that completes it."""
    inv = parse_invocation(task_id, meta, entries, completions)
    for item in inv.awaiting:
        index = item.get("index")
        if item.get("kind") == "awakeable" and type(index) is int and 0 <= index < len(entries):
            token = awakeable_token(entries[index])  # None: unreadable, shown in the steps
            if token is not None:
                item["awakeable_id"] = str(AwakeableId(task_id, index, token))
    return inv


def forget_invocation(app: Any, task_id: str) -> bool:
    """Delete the journal of ``task_id``, so that its id may run afresh.

    Returns:
        Whether there was a journal to delete.
    """
    return runtime_for(app).store.forget(task_id)


def resolve_awakeable(app: Any, awakeable_id: str, value: Any) -> bool:
    """Complete an awakeable with ``value`` (JSON types, and what Celery's json knows).

    Returns:
        True when this call completed it; False when it was completed before, or its
        invocation finished or is gone (then nothing is written).

    Raises:
        AwakeableError: ``awakeable_id`` is not an awakeable id.
        CodecError: ``value`` cannot be stored as JSON, is too large, or nests lists and
            dicts more than ``MAX_NESTING`` deep.
    """
    depth = nesting(value, MAX_NESTING)
    if depth > MAX_NESTING:
        raise CodecError(
            f"cannot resolve awakeable {awakeable_id!r}: the value nests lists and dicts more "
            f"than {MAX_NESTING} deep; the worker that reads it back could not. Send a "
            "flatter value."
        )
    try:
        payload = PLAIN_JSON.encode(value)
    except CodecError as exc:
        raise CodecError(f"cannot resolve awakeable {awakeable_id!r}: {exc}") from exc
    runtime = runtime_for(app)
    check_size(payload, runtime.settings.max_value_bytes, f"the value for {awakeable_id!r}")
    return _complete(app, awakeable_id, encode_completion(payload, None, time.time()))


#: How deep an awakeable's value may nest lists and dicts: reading it back recurses, in a
#: worker whose stack is already deep, so it must stay well under Python's limit.
MAX_NESTING = 100


def nesting(value: Any, limit: int) -> int:
    """How deep ``value`` nests lists, tuples and dicts, counted up to ``limit + 1``."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, list | tuple | dict):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return deepest


def reject_awakeable(app: Any, awakeable_id: str, message: str) -> bool:
    """Fail an awakeable: its future raises a ``TerminalError`` with ``message``.

    Returns and raises as ``resolve_awakeable``.
    """
    error = record_of(TerminalError(str(message)))
    return _complete(app, awakeable_id, encode_completion(None, error, time.time()))


def _complete(app: Any, awakeable_id: str, outcome: str) -> bool:
    parsed = AwakeableId.parse(awakeable_id)
    if parsed is None:
        shown = str(awakeable_id)[:200] + ("..." if len(str(awakeable_id)) > 200 else "")
        raise AwakeableError(
            f"{shown!r} is not an awakeable id; pass the id ctx.awakeable() returned "
            "(it looks like awk1.<...>.<index>.<token>)."
        )
    runtime = runtime_for(app)
    # An eager execution's journal is in this process; a worker's is in Redis.
    store: JournalStore = runtime.eager_store
    if store.wake_state(parsed.task_id) is None:
        store = runtime.store
    state = store.complete(parsed.task_id, parsed.index, "awakeable", parsed.token, outcome)
    if state == 2:
        publish_due(app, store)
    return state > 0
