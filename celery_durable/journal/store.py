"""What a journal store is: the protocol every store follows, and what a start returns.

Every method is one round trip to the store and one atomic change. An execution
that starts takes the invocation's lease and a fencing token; every write it makes
carries the token, and a store refuses the writes of an execution whose token is
no longer the invocation's (``LeaseLost``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

#: An invocation as stored: its metadata, its journal entries, its completions.
Stored = tuple[dict[str, str], list[str], dict[str, str]]

Status = Literal["running", "suspended", "paused", "completed", "failed", "cancelled", "replaced"]
#: Statuses after which nothing runs again; the journal expires after its retention.
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "replaced"})


def now() -> str:
    """Now, in seconds since the epoch, as the stores keep times (``created_at``...)."""
    return f"{time.time():.6f}"


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
    """What a wake-up re-publishes (JSON), stored when this start creates the invocation."""
    ended_fence: int = 0
    """The fence of an execution that ended in an outage without releasing its lease:
    that lease counts as released, neither live nor a death."""


@dataclass(frozen=True, slots=True)
class Started:
    """What one round trip at the start of an execution learns about its invocation."""

    state: Literal["run", "done", "busy", "conflict"]
    """``run``: this execution holds the lease. ``done``: finished (or replaced by a
    later request). ``busy``: another execution holds a live lease. ``conflict``: the
    id names another task or other arguments."""
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


@dataclass(frozen=True, slots=True)
class Resumption:
    """What ``JournalStore.resume`` did."""

    state: Literal["resumed", "refused", "no-call", "gone"]
    """``resumed``; ``refused``: neither paused nor failed; ``no-call``: no stored call
    (with ``require_call``); ``gone``: no such invocation. Only ``resumed`` changed it."""
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


class JournalStore(Protocol):
    """Where journals live. Every method is one round trip to the store."""

    def start(self, task_id: str, request: StartRequest) -> Started:
        """Create or resume the invocation and take its lease, or say why not."""
        ...

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | None:
        """Store ``entry`` at ``index`` unless one is there (first writer wins).

        ``ends_attempts`` says the step had failed attempts or a guard, to be cleared.

        Returns:
            None when this call wrote the entry, else the entry already at ``index``.

        Raises:
            LeaseLost: the invocation is gone, or another execution took its lease.
        """
        ...

    def record_attempt(
        self, task_id: str, fence: int, index: int, attempt: str, release: bool = True
    ) -> str | None:
        """Record failed attempts of the step at ``index``; with ``release``, end cleanly.

        Without ``release`` it records worker deaths during the step, which it counts
        (the execution goes on and runs the step again).

        Returns:
            None when recorded, else the entry another execution journaled at ``index``.
        """
        ...

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        """Mark the at-most-once step at ``index`` as started.

        Returns:
            None when marked, else the entry another execution journaled at ``index``.
        """
        ...

    def release(self, task_id: str, fence: int, fingerprint: str = "") -> bool:
        """End the execution cleanly, keeping the invocation as it is (a Celery retry).

        A non-empty ``fingerprint`` replaces the stored one (a retry with new arguments;
        the stored call follows at the next suspension, pause or finish, which store the
        call of the delivery that makes them). Returns False when the execution no
        longer held the lease.
        """
        ...

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool]:
        """Extend the leases ``(task_id, fence)`` by ``ttl`` seconds; False for lost ones."""
        ...

    def break_lease(self, task_id: str, holder: str) -> bool:
        """Expire the lease of ``holder``, a process known to be dead; keep it unreleased."""
        ...

    def finish(
        self,
        task_id: str,
        fence: int | None,
        status: str,
        outcome: str,
        retention: float,
        nesting: int = 0,
        call: str = "",
    ) -> tuple[str, str] | None:
        """Record the final outcome and let the invocation expire after ``retention``.

        ``fence`` None finishes it for an execution that cannot (revoked, killed by a
        time limit) and fences that execution out. A non-empty ``call`` is stored, so
        that a failed invocation can be resumed.

        Returns:
            None when this call finished the invocation, else the (status, outcome)
            that an earlier call recorded (first writer wins).
        """
        ...

    def pause(
        self, task_id: str, fence: int, reason: str, call: str = "", attempt: str = ""
    ) -> str:
        """Mark the running invocation paused; return its status after the call.

        A non-empty ``call`` is stored, so that it can be resumed; a non-empty
        ``attempt`` records the failed attempts of the step that paused it."""
        ...

    def pause_finished(self, task_id: str, status: str, outcome: str, reason: str) -> str:
        """Pause a finished invocation whose stored ``outcome`` was refused (unreadable,
        or in a codec nobody configured): kept without expiry until an operator resumes
        it (its body runs again from its journal) or forgets it.

        Only while it still has ``status`` and ``outcome``. Returns ``paused``, the status
        it has now when either changed (nothing was changed), or ``""`` when it is gone.
        """
        ...

    def suspend(
        self,
        task_id: str,
        fence: int,
        awaiting: str,
        indexes: Sequence[int],
        wake_at: float,
        call: str,
    ) -> str:
        """Suspend the invocation until a completion at one of ``indexes`` or ``wake_at``.

        ``wake_at`` is seconds since the epoch (0 for no timer); ``awaiting`` describes
        what it waits for (JSON); ``call`` is what a wake-up re-publishes. The lease is
        released. Returns ``suspended``, or ``ready`` when an awaited completion is
        there already or the timer is due, and the invocation must run again now.
        """
        ...

    def complete(self, task_id: str, index: int, kind: str, proof: str, outcome: str) -> int:
        """Complete the awaited operation at ``index`` from outside; first one wins.

        ``proof`` is the child's task id or the awakeable's secret token, as journaled.
        Returns 2 when completed and a wake-up of the suspended invocation is due, 1
        when completed, 0 when nothing was written.
        """
        ...

    def mark_sent(self, task_id: str, fence: int, index: int) -> None:
        """Note that the child at ``index`` was published."""
        ...

    def completions(self, task_id: str) -> dict[str, str]:
        """Return what came from outside so far (as ``Started.completions``)."""
        ...

    def claim_wakeups(self, limit: int, visibility: float) -> tuple[list[tuple[str, str]], float]:
        """Claim due wake-ups: ``(task_id, claim)`` pairs, and seconds until the next one.

        A claim hides the wake-up for ``visibility`` seconds; ``ack_wakeup`` removes it.
        The seconds are -1 when no wake-up is scheduled.
        """
        ...

    def wake_state(self, task_id: str) -> tuple[str, str] | None:
        """Return the invocation's status and stored call, or None if it is gone."""
        ...

    def ack_wakeup(self, task_id: str, claim: str) -> None:
        """Remove a claimed wake-up, unless it was scheduled again since the claim."""
        ...

    def forget(self, task_id: str) -> bool:
        """Delete the invocation; return whether it existed."""
        ...

    def read(self, task_id: str) -> Stored | None:
        """Return the invocation's metadata, raw entries and completions, or None."""
        ...

    def read_many(self, task_ids: Sequence[str]) -> list[Stored | None]:
        """Return what ``read`` returns for each id, in one round trip."""
        ...

    def list_ids(self, status: str | None, limit: int, offset: int = 0) -> list[str]:
        """Return invocation ids, newest first: all kept ones, or those of one live status."""
        ...

    def forget_index(self, task_ids: Sequence[str]) -> None:
        """Drop ids of invocations that no longer exist from the listing."""
        ...

    # -- Operators: resume, fork, purge ---------------------------------------------------

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        """Make a paused or failed invocation resumable: its next start runs it again.

        It becomes ``paused`` with ``reason``, without expiry, its fence raised and its
        deaths and recorded attempts cleared. A failed one loses its final outcome,
        and its last entry when that is a failed ``run`` step. With ``require_call``,
        one without a stored call is refused. Nothing changes unless it is resumed.
        """
        ...

    def fork(self, task_id: str, fork: Fork) -> bool:
        """Create invocation ``task_id``, paused, from ``fork``; False if the id is taken."""
        ...

    def forget_if(self, task_id: str, status: str, created_before: float) -> int:
        """Delete the invocation if it has ``status`` and was created before the time.

        Returns:
            1 when deleted, 0 when kept, -1 when it did not exist (its id is dropped
            from the listing).
        """
        ...

    def list_ids_before(
        self, status: str | None, before: float, limit: int, offset: int = 0
    ) -> list[str]:
        """Return ids created before ``before`` (seconds since the epoch), oldest first.

        Those of one live status, else all listed ones, whatever their status (the
        caller checks it); ids of expired invocations may linger in the listing.
        """
        ...
