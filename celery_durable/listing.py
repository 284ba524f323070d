"""Reading many invocations at once: pages of summaries, counts per status, and the ids a
bulk action touches. ``admin`` re-exports these; the ``ls`` command and the console call
them.

A listing reads summaries (``InvocationSummary``: task, status, times, how many steps),
never journals: a page costs the same whatever its invocations' journals hold. It walks
the creation-time indexes newest first, so a page starts where the previous one ended
(a cursor), and a filter that no index answers (a finished status, a task, an id search)
reads summaries in batches until the page is full or ``scan`` ids were looked at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from celery_durable.journal.records import InvocationSummary, parse_summary
from celery_durable.journal.store import Position
from celery_durable.keys import FINISHED_STATUSES, LIVE_STATUSES
from celery_durable.runtime import runtime_for

#: Every status an invocation can have.
STATUSES = (*LIVE_STATUSES, *FINISHED_STATUSES)
#: The most invocations one listing returns.
MAX_LIMIT = 1000
#: Summaries read per round trip while a filter looks for matches.
_BATCH = 250


@dataclass(frozen=True, slots=True)
class SummaryPage:
    """One page of a listing, newest first."""

    invocations: list[InvocationSummary]
    next_cursor: str | None
    """Where the next page starts (``cursor=``); None when nothing older is listed."""
    scanned: int
    """How many listed ids were looked at to fill the page."""


def list_summaries(
    app: Any,
    status: str | None = None,
    task_name: str | None = None,
    search: str | None = None,
    created_from: float | None = None,
    created_before: float | None = None,
    cursor: str | None = None,
    limit: int = 50,
    scan: int | None = None,
) -> SummaryPage:
    """Return a page of invocation summaries, newest first, without reading journals.

    Args:
        app: The Celery app.
        status: Only this status (one of ``STATUSES``).
        task_name: Only invocations of this task.
        search: Only ids that contain this text.
        created_from: Only those created at or after this time (seconds since the epoch).
        created_before: Only those created before this time.
        cursor: ``next_cursor`` of the previous page; None for the newest.
        limit: The most summaries to return, up to ``MAX_LIMIT``.
        scan: The most ids to look at (None: as many as it takes). A page that stops
            there is short, and its ``next_cursor`` goes on from the last id looked at.

    Raises:
        ValueError: a status, limit or cursor that is not one; the message says which.
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"status={status!r} must be one of {list(STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit={limit!r} must be a whole number from 1 to {MAX_LIMIT}")
    store = runtime_for(app).store
    after = decode_cursor(cursor)
    # Only a live status has an index of its own; anything else is checked per summary.
    filtered = status in FINISHED_STATUSES or bool(task_name) or bool(search)
    batch = max(limit, _BATCH) if filtered else limit
    budget = math.inf if scan is None else max(scan, 1)
    found: list[InvocationSummary] = []
    scanned = 0
    while len(found) < limit and scanned < budget:
        wanted = int(min(batch, budget - scanned))
        listed = store.list_page(status, wanted, after, created_from, created_before)
        summaries = store.summaries([task_id for task_id, _ in listed])
        # Finished invocations expire on their own; their ids may linger in an index.
        store.forget_index([i for (i, _), s in zip(listed, summaries, strict=True) if s is None])
        for position, summary in zip(listed, summaries, strict=True):
            scanned += 1
            after = position
            if summary is not None and _matches(summary[0], position[0], status, task_name,
                                                search):  # fmt: skip
                found.append(parse_summary(position[0], *summary))
                if len(found) == limit:
                    break
        if len(listed) < wanted and (not listed or after == listed[-1]):
            return SummaryPage(found, None, scanned)  # the oldest listed one was reached
    return SummaryPage(found, encode_cursor(after), scanned)


def _matches(
    meta: dict[str, str],
    task_id: str,
    status: str | None,
    task_name: str | None,
    search: str | None,
) -> bool:
    if status is not None and meta.get("status") != status:
        return False
    if task_name and meta.get("task") != task_name:
        return False
    return not search or search in task_id


def summaries_of(app: Any, task_ids: list[str]) -> list[InvocationSummary | None]:
    """Return the summary of each of ``task_ids`` (None for one not kept), in one round trip."""
    if not task_ids:
        return []
    found = runtime_for(app).store.summaries(task_ids)
    return [
        None if summary is None else parse_summary(task_id, *summary)
        for task_id, summary in zip(task_ids, found, strict=True)
    ]


def count_invocations(app: Any) -> dict[str, int]:
    """Return how many invocations are ``running``, ``suspended`` and ``paused`` (one
    round trip; finished ones have no count of their own)."""
    return runtime_for(app).store.count_live()


def select_ids(
    app: Any,
    status: str,
    task_name: str | None = None,
    created_before: float | None = None,
) -> list[str]:
    """Return the ids of every invocation of ``status`` (of one task, created before a
    time), newest first: what a bulk action would touch now.

    Raises:
        ValueError: ``status`` is not one of ``STATUSES``.
    """
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = list_summaries(
            app, status, task_name, created_before=created_before, cursor=cursor,
            limit=MAX_LIMIT,
        )  # fmt: skip
        ids += [summary.id for summary in page.invocations]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def encode_cursor(position: Position | None) -> str | None:
    """The cursor text of a place in a listing: ``<created_at>:<id>``."""
    return None if position is None else f"{position[1]!r}:{position[0]}"


def decode_cursor(cursor: str | None) -> Position | None:
    """The place in a listing that ``cursor`` names.

    Raises:
        ValueError: ``cursor`` is not one a listing gave.
    """
    if not cursor:
        return None
    stamp, sep, task_id = cursor.partition(":")
    try:
        created = float(stamp)
    except ValueError:
        created = math.nan
    if not sep or not math.isfinite(created):
        raise ValueError(
            f"cursor={cursor!r} is not one a listing gave; start again from the first page."
        )
    return (task_id, created)
