"""Reading journals, and forgetting them: what ran, what it returned, where it stands."""

from __future__ import annotations

from typing import Any

from celery_durable.journal.records import Invocation, parse_invocation
from celery_durable.runtime import runtime_for


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
