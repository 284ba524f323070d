"""What a journal store is: the protocol every store follows, and what a start returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["running", "suspended", "completed", "failed", "paused"]
FINISHED: frozenset[str] = frozenset({"completed", "failed"})


@dataclass(frozen=True, slots=True)
class Started:
    """What one round trip at the start of an execution learns about its invocation."""

    created: bool
    """True when this execution created the invocation."""
    task_name: str
    fingerprint: str
    seed: int
    status: str
    outcome: str | None
    """The final outcome's JSON text once the invocation has finished."""
    entries: list[str]
    """The journal's entries as stored, parsed only when replay reaches them."""
    length: int = 0
    """The journal's length when the execution started; ``crashes``, ``attempt`` and
    ``guard`` are about the step at this index."""
    crashes: int = 0
    """Earlier executions that started where this one does and never ended cleanly."""
    attempt: str | None = None
    """The failed attempts of the next step, as JSON, if it failed before."""
    guard: int | None = None
    """Index of an at-most-once step that an earlier execution started."""


class JournalStore(Protocol):
    """Where journals live. Every method is one round trip to the store."""

    def start(
        self, task_id: str, task_name: str, fingerprint: str, seed: int, retries: int
    ) -> Started:
        """Create the invocation unless it exists; return its whole state.

        ``retries`` is the delivery's Celery retry count: a start with the same count
        as the last one is a redelivery, so the execution before it died.
        """
        ...

    def append(self, task_id: str, index: int, entry: str, ends_attempts: bool) -> str | None:
        """Store ``entry`` at ``index`` unless one is there (first writer wins).

        ``ends_attempts`` says the step had failed attempts or a guard, to be cleared.

        Returns:
            None when this call wrote the entry, else the entry already at ``index``.
        """
        ...

    def record_attempt(self, task_id: str, index: int, attempt: str) -> str | None:
        """Record failed attempts of the step at ``index``, the next journal entry.

        This also marks the execution as ending cleanly (it is about to retry).

        Returns:
            None when recorded, else the entry another execution journaled at ``index``.
        """
        ...

    def guard(self, task_id: str, index: int) -> str | None:
        """Mark the at-most-once step at ``index`` as started.

        Returns:
            None when marked, else the entry another execution journaled at ``index``.
        """
        ...

    def finish(
        self, task_id: str, status: str, outcome: str, retention: float
    ) -> tuple[str, str] | None:
        """Record the final outcome and let the invocation expire after ``retention``.

        Returns:
            None when this call finished the invocation, else the (status, outcome)
            that an earlier call recorded (first writer wins).
        """
        ...

    def pause(self, task_id: str, reason: str) -> None:
        """Mark the invocation paused: kept, without expiry, until someone acts."""
        ...

    def read(self, task_id: str) -> tuple[dict[str, str], list[str]] | None:
        """Return the invocation's metadata and raw entries, or None if it is gone."""
        ...

    def read_many(self, task_ids: Sequence[str]) -> list[tuple[dict[str, str], list[str]] | None]:
        """Return what ``read`` returns for each id, in one round trip."""
        ...

    def recent_ids(self, limit: int, offset: int = 0) -> list[str]:
        """Return invocation ids, newest first."""
        ...

    def forget_index(self, task_ids: Sequence[str]) -> None:
        """Drop ids of invocations that no longer exist from the listing."""
        ...
