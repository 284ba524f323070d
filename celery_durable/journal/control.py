"""What a journal store does for flow control: cancels, deadlines, concurrency keys.

``JournalStore`` includes this protocol (``FlowControlStore``); its replies are here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Cancelling:
    """A write's news that the invocation was cancelled meanwhile (``JournalStore.cancel``):
    the execution raises ``InvocationCancelled`` at its next durable operation."""

    reason: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """What ``JournalStore.cancel`` did."""

    state: Literal["requested", "finished", "gone"]
    """``requested``: its execution raises ``InvocationCancelled`` at its next durable
    operation; ``finished``: it had finished, nothing changed; ``gone``: no such
    invocation."""
    status: str = ""
    """Its status before the call (none when gone)."""
    already: bool = False
    """It was cancelled before: the first reason stays."""
    woken: bool = False
    """It was suspended or paused: a wake-up is due now, which publishes it."""
    call: str = ""
    """Its stored call, to publish now: it runs, and no execution holds it (its message
    may wait for a retry's countdown, or be lost)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``JournalStore.acquire_slot`` did."""

    state: Literal["held", "acquired", "queued"]
    """``held``: it held a slot already; ``acquired``: it got one now; ``queued``: every
    slot is taken, it waits (in arrival order)."""
    ticket: str = ""
    """When it first asked (``queued``): its place in the line, and what the grant that
    hands it a slot writes to its completions (``DoneField.grant``)."""
    holders: list[str] = field(default_factory=list)
    """Who holds the slots (``queued``), to check that they still run."""


class FlowControlStore(Protocol):
    """The flow-control part of a journal store (``JournalStore``): every method is one
    round trip and one atomic change, as there."""

    def due_deadlines(self, limit: int) -> tuple[list[tuple[str, float]], float]:
        """Up to ``limit`` invocations whose deadline has passed, ``(id, deadline)`` (seconds
        since the epoch), and the seconds until the next one is due (-1 when none is
        kept). Each stays listed until ``cancel``."""
        ...

    # -- Cancel ------------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str) -> Cancel:
        """Cancel the invocation gracefully: its execution raises ``InvocationCancelled``
        at its next durable operation. One atomic change, refused (``finished``) once it
        has finished; its deadline, if any, is dropped.

        A suspended or paused one is woken: a wake-up is due now (a paused one is
        released to its next start, as ``resume`` releases it). A running one that no
        execution holds comes with its call, to publish now.
        """
        ...

    # -- Concurrency keys ------------------------------------------------------------------

    def acquire_slot(self, key: str, task_id: str, limit: int) -> Admission:
        """Take one of ``limit`` slots of concurrency key ``key`` for ``task_id``, or wait
        for one, in arrival order. Free slots go to the earliest waiters first."""
        ...

    def release_slots(self, key: str, task_ids: Sequence[str], limit: int) -> list[tuple[str, str]]:
        """Take ``task_ids`` out of key ``key``'s holders and waiters, and hand the free
        slots (of ``limit``) to the earliest waiters: return them, ``(id, ticket)``."""
        ...

    def check_holders(self, task_ids: Sequence[str]) -> list[float | None]:
        """For each invocation that holds a slot: None when it no longer does (it is gone
        or finished, or it runs with a lease that ran out: its execution died, and it is
        fenced out), else the seconds until its lease runs out (-1 for one that holds
        its slot without a lease: suspended, paused, waiting for a retry)."""
        ...

    def grant_slot(self, task_id: str, grant: str) -> int:
        """Tell ``task_id`` that it got a slot: ``grant`` (``DoneField.grant``) goes into its
        completions. Returns 2 when it was suspended and a wake-up is due, 1 when told,
        0 when it is gone or finished (the slot must go on to the next waiter)."""
        ...

    def slot_state(self, key: str) -> tuple[list[str], list[str]]:
        """Who holds the slots of ``key`` (by when they got one) and who waits (in order)."""
        ...
