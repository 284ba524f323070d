"""What a journal store is: the protocol every store follows (its values are in ``shapes``).

Every method is one round trip to the store and one atomic change. An execution
that starts takes the invocation's lease and a fencing token; every write it makes
carries the token, and a store refuses the writes of an execution whose token is
no longer the invocation's (``LeaseLost``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from celery_durable.journal.control import Admission as Admission
from celery_durable.journal.control import Cancel as Cancel
from celery_durable.journal.control import Cancelling as Cancelling
from celery_durable.journal.control import FlowControlStore
from celery_durable.journal.shapes import FINISHED as FINISHED
from celery_durable.journal.shapes import SUMMARY_FIELDS as SUMMARY_FIELDS
from celery_durable.journal.shapes import TOMBSTONE_TTL as TOMBSTONE_TTL
from celery_durable.journal.shapes import Fork as Fork
from celery_durable.journal.shapes import Position as Position
from celery_durable.journal.shapes import Reopening as Reopening
from celery_durable.journal.shapes import Resumption as Resumption
from celery_durable.journal.shapes import Started as Started
from celery_durable.journal.shapes import StartRequest as StartRequest
from celery_durable.journal.shapes import Status as Status
from celery_durable.journal.shapes import Stored as Stored
from celery_durable.journal.shapes import Summary as Summary
from celery_durable.journal.shapes import not_running as not_running
from celery_durable.journal.shapes import now as now


class JournalStore(FlowControlStore, Protocol):
    """Where journals live. Every method is one round trip to the store.

    Every write of an execution carries its fence and is refused with ``LeaseLost``
    when the fence is not the invocation's (another execution took it, or it is gone),
    and when the invocation no longer runs (it finished, paused or suspended): nothing
    is written to a finished or paused invocation by an execution. Fences only go up
    for a task id, across forget, replace and re-creation.
    """

    def start(self, task_id: str, request: StartRequest) -> Started:
        """Create or resume the invocation and take its lease, or say why not.

        A paused invocation runs only once an operator released it (``resume``,
        ``fork``); the start that runs it consumes the release.
        """
        ...

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | Cancelling | None:
        """Store ``entry`` at ``index`` unless one is there (first writer wins).

        ``ends_attempts`` says the step had failed attempts or a guard, to be cleared.

        Returns:
            None when this call wrote the entry, ``Cancelling`` when it wrote it and the
            invocation was cancelled, else the entry already at ``index``.

        Raises:
            LeaseLost: the invocation is gone, another execution took its lease, or it
                no longer runs (finished, paused, suspended).
        """
        ...

    def record_attempt(
        self,
        task_id: str,
        fence: int,
        index: int,
        attempt: str,
        release: bool = True,
        retry_in: float = 0.0,
        cancellable: bool = True,
    ) -> str | Cancelling | None:
        """Record failed attempts of the step at ``index``; with ``release``, end cleanly.

        Released, the step's retry is due in ``retry_in`` seconds: until then, and
        ``durable_recovery_after`` more, ``recover`` leaves the invocation alone.
        Without ``release`` it records worker deaths during the step, which it counts
        (the execution goes on and runs the step again).

        Returns:
            None when recorded, ``Cancelling`` when released while the invocation was
            cancelled and the execution had raised no cancel (``cancellable``): its retry
            should come at once, for the cancel to be raised at the step. Else the entry
            another execution journaled at ``index``.
        """
        ...

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        """Mark the at-most-once step at ``index`` as started.

        Returns:
            None when marked, else the entry another execution journaled at ``index``.
        """
        ...

    def release(
        self,
        task_id: str,
        fence: int,
        fingerprint: str = "",
        retry_in: float = 0.0,
        call: str = "",
        reopen: Reopening | None = None,
        cancellable: bool = True,
    ) -> bool | Cancelling:
        """End the execution cleanly, keeping the invocation as it is (a Celery retry).

        The next delivery is due in ``retry_in`` seconds (the retry's countdown): until
        then, and ``durable_recovery_after`` more, ``recover`` leaves the invocation
        alone. A non-empty ``fingerprint`` and ``call`` replace the stored ones (a retry
        with new arguments). With ``reopen``, in the same atomic write, the entries from
        ``reopen.start`` on are dropped and its attempt record stored, if ``reopen.last``
        is still the journal's last entry. Returns False when the execution no longer
        held the lease, or the invocation no longer runs (then nothing changed), and
        ``Cancelling`` when released while the invocation was cancelled and the execution
        had raised no cancel (``cancellable``): its next delivery should come at once.
        """
        ...

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool | Cancelling]:
        """Extend the leases ``(task_id, fence)`` by ``ttl`` seconds; False for lost ones,
        ``Cancelling`` for renewed ones of cancelled invocations.

        True, with nothing extended, for a fence newer than the stored one: the store
        lost writes (the start that gave it), and the holder's next write says so.
        """
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
        journal_retention: float | None = None,
        entries: Sequence[str] | None = None,
        held_call: str = "",
    ) -> tuple[str, str] | None:
        """Record the final outcome and let the invocation expire after ``retention``.

        ``fence`` None finishes it for an execution that cannot (revoked, killed by a
        time limit) and fences that execution out. A non-empty ``call`` is stored, so
        that a failed invocation can be resumed.

        Its steps (journal, completions, call) expire after ``journal_retention``
        (None: ``retention``; at most ``retention``; 0 deletes them now). When they go
        first, the meta hash records when (``MetaField.STEPS_UNTIL``); what stays is
        what exactly-once completion needs: status, outcome, times, fingerprint.

        ``entries`` are the journal's entries as the finishing execution holds them: a
        store may keep a ``completed`` invocation's kept steps in a smaller form made of
        them (the Redis store packs them with its call), if the journal still holds that
        many; its readers (``read_many``, ``summaries``) see no difference.
        ``held_call`` is the call as the finisher knows it: packed with them if it is
        the stored one (else the stored one is kept as it is).

        Returns:
            None when this call finished the invocation, else the (status, outcome)
            that an earlier call recorded (first writer wins).

        Raises:
            LeaseLost: it is gone, another execution holds it, or (with a ``fence``)
                it is paused or suspended: its execution ended there.
        """
        ...

    def pause(
        self, task_id: str, fence: int, reason: str, call: str = "", attempt: str = ""
    ) -> str:
        """Mark the running invocation paused; return its status after the call (the
        status it had when it was not running: nothing changed then).

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
        cancellable: bool = True,
    ) -> str:
        """Suspend the invocation until a completion at one of ``indexes`` or ``wake_at``.

        ``wake_at`` is seconds since the epoch (0 for no timer); ``awaiting`` describes
        what it waits for (JSON); ``call`` is what a wake-up re-publishes. The lease is
        released. Returns ``suspended``, or ``ready`` when an awaited completion is
        there already, the timer is due, or the invocation was cancelled and the execution
        had raised no cancel (``cancellable``): it must run again now. An index may be a
        ``DoneField`` name (a slot's grant).
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
        """Delete the invocation, keeping its fence in a tombstone for ``TOMBSTONE_TTL``;
        return whether it existed."""
        ...

    # -- Recovery of invocations whose message was lost -----------------------------------

    def take_recovery_turn(self, seconds: float, holder: str = "") -> bool:
        """Whether this process sweeps for lost invocations and deadlines now; if so, no
        other process gets a turn for ``seconds``. A ``holder`` whose turn it is keeps it
        until then, however often it asks."""
        ...

    def recover(self, task_ids: Sequence[str], after: float) -> list[str | None]:
        """Claim the lost invocations among ``task_ids``; return each one's stored call.

        Lost: running, its lease ran out and its retry (if any) was due more than
        ``after`` seconds ago, and the last claim was not more recent. A claim puts off
        the next one by ``after``, then twice as long each time while no execution
        takes the lease. The call is "" for a claimed invocation that has none, None for
        one that was not claimed (gone, not running, or not lost).
        """
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

    def list_page(
        self,
        status: str | None,
        limit: int,
        after: Position | None = None,
        created_from: float | None = None,
        created_before: float | None = None,
    ) -> list[Position]:
        """Return up to ``limit`` ``(id, created_at)`` pairs, newest first, ties by id
        descending: those listed after ``after`` (a pair returned before), created at or
        after ``created_from`` and before ``created_before`` (seconds since the epoch).

        Those of one live status, else every listed one, whatever its status (the caller
        checks a finished status); ids of expired invocations may linger in the listing.
        """
        ...

    def summaries(self, task_ids: Sequence[str]) -> list[Summary | None]:
        """Return each invocation's ``Summary``, or None if it is gone, in one round trip."""
        ...

    def count_live(self) -> dict[str, int]:
        """Return how many invocations each live status has (running, suspended, paused)."""
        ...

    # -- Operators: resume, fork, purge ---------------------------------------------------

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        """Make a paused or failed invocation resumable: its next start runs it again.

        It becomes ``paused`` with ``reason``, released to its next start, without
        expiry, its fence raised and its deaths and recorded attempts cleared. A failed
        one loses its final outcome, and its last entry when that is a failed ``run``
        step. With ``require_call``, one without a stored call is refused. Nothing
        changes unless it is resumed.
        """
        ...

    def fork(self, task_id: str, fork: Fork) -> bool:
        """Create invocation ``task_id``, paused and released to its first start, from
        ``fork``; False if the id is taken."""
        ...

    def forget_if(self, task_id: str, status: str, created_before: float) -> int:
        """Delete the invocation if it has ``status`` and was created before the time,
        keeping its fence in a tombstone as ``forget`` does.

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
