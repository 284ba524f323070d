"""Keeping the leases of running executions alive, from one heartbeat thread per process.

An execution owns its invocation for ``lease_ttl`` seconds at a time. Renewing on the
step path would cost a write per step and would not help a step that runs longer
than the lease; so a daemon thread renews every lease the process holds, a third of
the way into it, in one round trip per store. A lease that could not be renewed
(another execution took it) is marked lost; the execution finds out at its next
write, which the store refuses, and stops. A renewal also tells the execution of a
cancel (``Lease.on_cancel``), so that a long step can see it (``ctx.cancelled``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from celery_durable.errors import JournalError
from celery_durable.journal.store import Cancelling

logger = logging.getLogger("celery_durable")


class Renewing(Protocol):
    """The part of a journal store a heartbeat needs."""

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool | Cancelling]: ...


@dataclass(eq=False)
class Lease:
    """One execution's hold on its invocation."""

    store: Renewing
    task_id: str
    fence: int
    ttl: float
    lost: bool = False
    """Set when a renewal found the lease taken: the execution's next write fails."""
    renewed_at: float = field(default_factory=time.monotonic)
    on_cancel: Callable[[str], None] | None = None
    """Told the reason when a renewal finds the invocation cancelled (from the heartbeat's
    thread)."""

    @property
    def due_at(self) -> float:
        """When to renew it: a third of the way into the lease."""
        return self.renewed_at + self.ttl / 3


class LeaseKeeper:
    """Renews the leases this process holds until they are dropped."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._shortest = float("inf")

    def hold(
        self,
        store: Renewing,
        task_id: str,
        fence: int,
        ttl: float,
        on_cancel: Callable[[str], None] | None = None,
    ) -> Lease:
        """Start renewing the lease that an execution took with ``fence``."""
        lease = Lease(store, task_id, fence, ttl, on_cancel=on_cancel)
        with self._lock:
            if self._pid != os.getpid():
                # After a fork (a prefork pool child) the parent's thread is not here.
                self._pid, self._thread, self._leases = os.getpid(), None, set()
            self._leases.add(lease)
            if self._thread is None:
                self._shortest = lease.ttl
                self._thread = threading.Thread(
                    target=self._beat, name="celery-durable-leases", daemon=True
                )
                self._thread.start()
            elif lease.ttl < self._shortest:
                self._shortest = lease.ttl
                self._wake.notify()  # it sleeps longer than this lease can wait
        return lease

    def drop(self, lease: Lease) -> None:
        """Stop renewing ``lease``: its execution ended."""
        with self._lock:
            self._leases.discard(lease)

    def _beat(self) -> None:
        # It wakes at least every third of the shortest lease it has seen, leases or not,
        # so that taking a lease never needs to wake it: most executions are over before
        # their lease is due for renewal, and cost the heartbeat nothing.
        while True:
            with self._lock:
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.due_at <= now]
                if not due:
                    following = min((x.due_at for x in self._leases), default=None)
                    pause = self._shortest / 3 if following is None else following - now
                    self._wake.wait(timeout=min(pause, self._shortest / 3))
                    continue
            self.renew(due)

    @staticmethod
    def renew(leases: Sequence[Lease]) -> None:
        """Renew ``leases`` now, one round trip per store and ttl; mark the lost ones."""
        groups: dict[tuple[int, float], list[Lease]] = {}
        for lease in leases:
            groups.setdefault((id(lease.store), lease.ttl), []).append(lease)
        for (_, ttl), group in groups.items():
            started = time.monotonic()
            try:
                renewed = group[0].store.renew([(x.task_id, x.fence) for x in group], ttl)
            except JournalError as exc:
                # Not lost yet: the lease may outlast the outage. The next beat retries.
                logger.warning("celery-durable: could not renew %d lease(s): %s", len(group), exc)
                for lease in group:  # try again in a second, not in a tight loop
                    lease.renewed_at = started - ttl / 3 + min(1.0, ttl / 6)
                continue
            for lease, ok in zip(group, renewed, strict=True):
                lease.renewed_at = started
                if isinstance(ok, Cancelling) and lease.on_cancel is not None:
                    lease.on_cancel(ok.reason)
                if not ok and not lease.lost:
                    lease.lost = True
                    logger.warning(
                        "celery-durable: invocation %s: this execution lost its lease "
                        "(fence %d); it stops at its next journal write",
                        lease.task_id,
                        lease.fence,
                    )


#: The keeper of this process.
KEEPER = LeaseKeeper()
