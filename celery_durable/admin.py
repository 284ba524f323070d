"""Operating invocations from outside: read and forget journals, complete awakeables."""

from __future__ import annotations

import time
from typing import Any

from celery_durable.codec import PLAIN_JSON
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.errors import AwakeableError, CodecError, TerminalError
from celery_durable.journal.entries import check_size, encode_completion
from celery_durable.journal.failures import record_of
from celery_durable.journal.records import Invocation, parse_invocation
from celery_durable.journal.store import JournalStore
from celery_durable.runtime import runtime_for
from celery_durable.wakeups import publish_due


def get_invocation(app: Any, task_id: str) -> Invocation | None:
    """Return the invocation with Celery task id ``task_id``, or None if none is kept."""
    found = runtime_for(app).store.read(task_id)
    return None if found is None else parse_invocation(task_id, *found)


def list_invocations(app: Any, status: str | None = None, limit: int = 100) -> list[Invocation]:
    """Return up to ``limit`` kept invocations, newest first, optionally of one status."""
    store = runtime_for(app).store
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
            if record is not None and (status is None or record[0].get("status") == status):
                found.append(parse_invocation(task_id, *record))
    return found[:limit]


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
        CodecError: ``value`` cannot be stored as JSON, or is too large.
    """
    try:
        payload = PLAIN_JSON.encode(value)
    except CodecError as exc:
        raise CodecError(f"cannot resolve awakeable {awakeable_id!r}: {exc}") from exc
    runtime = runtime_for(app)
    check_size(payload, runtime.settings.max_value_bytes, f"the value for {awakeable_id!r}")
    return _complete(app, awakeable_id, encode_completion(payload, None, time.time()))


def reject_awakeable(app: Any, awakeable_id: str, message: str) -> bool:
    """Fail an awakeable: its future raises a ``TerminalError`` with ``message``.

    Returns and raises as ``resolve_awakeable``.
    """
    error = record_of(TerminalError(str(message)))
    return _complete(app, awakeable_id, encode_completion(None, error, time.time()))


def _complete(app: Any, awakeable_id: str, outcome: str) -> bool:
    parsed = AwakeableId.parse(awakeable_id)
    if parsed is None:
        raise AwakeableError(
            f"{awakeable_id!r} is not an awakeable id; pass the id ctx.awakeable() returned "
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
