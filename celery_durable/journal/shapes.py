"""The values a journal store takes and returns: what a start brings and learns, what an
operator's resume, re-open and fork carry, and the few constants every store shares.
``journal.store`` defines the protocol over them (and re-exports them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from celery_durable.keys import MetaField

#: An invocation as stored: its metadata, its journal entries, its completions.
Stored = tuple[dict[str, str], list[str], dict[str, str]]
#: What a listing reads of an invocation: the metadata fields of ``SUMMARY_FIELDS`` that
#: it has, and how many journal entries it has. No value, so reading one costs the same
#: whatever the journal holds.
Summary = tuple[dict[str, str], int]
#: The metadata fields a listing reads: none holds a step's value or the outcome.
SUMMARY_FIELDS = (
    MetaField.TASK, MetaField.STATUS, MetaField.CREATED_AT, MetaField.UPDATED_AT,
    MetaField.PAUSED_REASON, MetaField.AWAITING, MetaField.ATTEMPT,
)  # fmt: skip
#: A place in a listing: the ``(id, created_at)`` of the last invocation seen.
Position = tuple[str, float]

Status = Literal["running", "suspended", "paused", "completed", "failed", "cancelled", "replaced"]
#: Statuses after which nothing runs again; the journal expires after its retention.
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "replaced"})

#: Seconds a forgotten invocation's last fence is kept (its tombstone), so that one
#: created anew under its id starts above it even within the same millisecond, or with
#: the store's clock set back meanwhile; past that, the clock alone keeps fences going up.
TOMBSTONE_TTL = 24 * 3600.0


def not_running(task_id: str, action: str, status: str) -> str:
    """The message of ``LeaseLost`` for a write refused because the invocation no longer
    runs, though the writer still holds its fence.

    Its own execution (or one of its async steps) finished, paused or suspended it. The
    execution writes nothing more and ends without changing anything; its message is
    acknowledged, as for any lost lease: a paused invocation goes on when an operator
    moves it on, a suspended one when it is woken, and a finished one has its outcome.
    """
    return (
        f"cannot {action} invocation {task_id}: it is {status}, no longer running, so "
        "nothing more is written to it. This execution stops here and changes nothing."
    )


def now() -> str:
    """Now, in seconds since the epoch, as the stores keep times (``created_at``...): to
    the millisecond, which is what people and the listing need, in 14 bytes."""
    return f"{time.time():.3f}"


@dataclass(frozen=True, slots=True)
class StartRequest:
    """What an execution brings to its start."""

    task_name: str
    fingerprint: str
    seed: int
    """Stored only when this start creates the invocation."""
    lease_ttl: float
    """Seconds the lease lasts unless it is renewed."""
    holder: str
    """Who takes the lease, ``host:pid``, so that a worker can break a dead child's."""
    nesting: int = 0
    """``replaced_task_nesting`` of the request: a replacement comes with more."""
    call: str = ""
    """What re-publishes the invocation (JSON: a wake-up, the recovery sweep, a resume),
    stored when this start creates it."""
    ended_fence: int = 0
    """The fence of an execution that ended in an outage without releasing its lease:
    that lease counts as released, neither live nor a death."""
    timeout: float = 0.0
    """Seconds from creation to the invocation's deadline, stored when this start creates
    it (``durable_timeout``, a child's ``timeout``); 0 for none."""
    concurrency: str = ""
    """``<limit>:<key>`` of its concurrency key, stored when this start creates it; ""
    for none."""


@dataclass(frozen=True, slots=True)
class Started:
    """What one round trip at the start of an execution learns about its invocation."""

    state: Literal["run", "done", "busy", "conflict", "paused"]
    """``run``: this execution holds the lease. ``done``: finished (or replaced by a
    later request). ``busy``: another execution holds a live lease. ``conflict``: the
    id names another task or other arguments. ``paused``: paused, and no operator
    released it to a start (resume, restart): this delivery runs nothing."""
    created: bool = False
    status: str = "running"
    """The status before this start (``run``) or now (otherwise)."""
    fence: int = 0
    seed: int = 0
    entries: list[str] = field(default_factory=list)
    """The journal's entries as stored, parsed only when replay reaches them."""
    deaths: int = 0
    """Executions that died in a row with the journal as it is now."""
    attempt: str | None = None
    """The failed attempts of the next step, as JSON, if it failed before."""
    guard: int | None = None
    """Index of an at-most-once step that an earlier execution started."""
    completions: dict[str, str] = field(default_factory=dict)
    """What came from outside, by journal index: outcomes of children and awakeables
    (JSON), and ``<index>:sent`` for children that were published."""
    outcome: str | None = None
    """The final outcome's JSON text (``done``)."""
    busy_for: float = 0.0
    """Seconds until the other execution's lease expires (``busy``)."""
    holder: str = ""
    """Who holds the lease (``busy``)."""
    task_name: str = ""
    fingerprint: str = ""
    """What the invocation was started with (``conflict``)."""
    cancel: str | None = None
    """Why it was cancelled, if it was (``run``): see ``Cancelling``."""


@dataclass(frozen=True, slots=True)
class Reopening:
    """What a release re-opens for Celery's retry idiom: the journal's last entries,
    dropped so that the retry runs them again (``engine.reopen``)."""

    start: int
    """Index of the first entry to drop; every entry from it to the end goes."""
    last: str
    """The journal's last entry as this execution wrote it: nothing is dropped unless
    it is still the last one."""
    attempt: str
    """The attempt record of the re-opened step(s), JSON (``engine.attempts``)."""


@dataclass(frozen=True, slots=True)
class Resumption:
    """What ``JournalStore.resume`` did."""

    state: Literal["resumed", "refused", "no-call", "dropped", "gone"]
    """``resumed``; ``refused``: neither paused nor failed; ``no-call``: no stored call
    (with ``require_call``); ``dropped``: its steps were dropped after its journal
    retention, so that running it again would run them again; ``gone``: no such
    invocation. Only ``resumed`` changed it."""
    status: str = ""
    """Its status before the call (none when gone)."""
    call: str = ""
    """The stored call, what re-publishes it (``resumed``)."""
    dropped: str | None = None
    """The failed entry it lost (a failed invocation whose last step failed)."""
    dropped_at: int = -1
    """The journal index of that entry; -1 when none was dropped."""


@dataclass(frozen=True, slots=True)
class Fork:
    """What a forked invocation starts with: a copy of another's first entries."""

    task_name: str
    fingerprint: str
    seed: int
    entries: list[str]
    completions: dict[str, str]
    """The outcomes from outside of those entries, as ``Started.completions``."""
    call: str
    """What publishes it, under its own task id."""
    reason: str
    """Why it is paused until its first start."""
