"""The in-memory store's state and what every part of it uses: retention and fences."""

from __future__ import annotations

import threading
import time

from celery_durable.errors import LeaseLost
from celery_durable.journal.store import TOMBSTONE_TTL, not_running
from celery_durable.keys import MetaField as F


class MemoryBase:
    """Journals in dictionaries; counts calls the way Redis would see round trips."""

    def __init__(self) -> None:
        self.meta: dict[str, dict[str, str]] = {}
        self.journals: dict[str, list[str]] = {}
        self.done: dict[str, dict[str, str]] = {}
        self.wakeups: dict[str, int] = {}
        """Suspended invocations by when to wake them, ms (a sorted set in Redis)."""
        self.expires_at: dict[str, float] = {}
        self.steps_expire_at: dict[str, float] = {}
        """When finished invocations' steps go, before their outcome (monotonic)."""
        self.tombstones: dict[str, tuple[int, float]] = {}
        """The last fence of forgotten invocations, and when it is dropped (monotonic)."""
        self.deadlines: dict[str, int] = {}
        """Invocations with a deadline, by when it is (ms; a sorted set in Redis)."""
        self.holders: dict[str, dict[str, int]] = {}
        self.waiting: dict[str, dict[str, int]] = {}
        """By concurrency key: who holds a slot (by when), who waits (by when they asked)."""
        self.round_trips = 0
        self._swept_at = time.monotonic()
        # Executions of one process may run in threads (a threads pool, eager tasks).
        self._lock = threading.RLock()

    def _live(self, task_id: str) -> dict[str, str] | None:
        """The metadata of ``task_id``, after dropping it if its retention has passed."""
        expires = self.expires_at.get(task_id)
        if expires is not None and expires <= time.monotonic():
            self._drop(task_id)
        steps = self.steps_expire_at.get(task_id)
        if steps is not None and steps <= time.monotonic():
            self._drop_steps(task_id)
        return self.meta.get(task_id)

    def _drop_steps(self, task_id: str) -> None:
        """Keep only what exactly-once completion needs of a finished invocation (the
        journal retention, as finish.lua deletes or expires its keys)."""
        self.steps_expire_at.pop(task_id, None)
        if task_id in self.meta:
            self.journals[task_id] = []
            self.done[task_id] = {}
            self.meta[task_id].pop(F.CALL, None)
            self.meta[task_id].pop(F.SEED, None)

    def _sweep(self) -> None:
        """Drop every invocation whose retention has passed, at most once a second."""
        now = time.monotonic()
        if now - self._swept_at > 1.0:
            self._swept_at = now
            for task_id in [i for i, at in self.expires_at.items() if at <= now]:
                self._drop(task_id)
            for task_id in [i for i, (_, at) in self.tombstones.items() if at <= now]:
                del self.tombstones[task_id]

    def _drop(self, task_id: str) -> None:
        self.wakeups.pop(task_id, None)
        self.meta.pop(task_id, None)
        self.journals.pop(task_id, None)
        self.done.pop(task_id, None)
        self.expires_at.pop(task_id, None)
        self.steps_expire_at.pop(task_id, None)

    def _fenced(self, task_id: str, fence: int, action: str) -> dict[str, str]:
        self.round_trips += 1
        meta = self._live(task_id)
        if meta is None:
            raise LeaseLost(f"cannot {action} invocation {task_id}: it no longer exists")
        if meta[F.FENCE] != str(fence):
            raise LeaseLost(f"cannot {action} invocation {task_id}: another execution holds it")
        return meta

    def _running(self, task_id: str, fence: int, action: str) -> dict[str, str]:
        """``_fenced``, for a write that also needs the invocation to be running."""
        meta = self._fenced(task_id, fence, action)
        if meta[F.STATUS] != "running":
            raise LeaseLost(not_running(task_id, action, meta[F.STATUS]))
        return meta

    def _bury(self, task_id: str, meta: dict[str, str] | None) -> None:
        """Keep the fence of an invocation about to be deleted (forget.lua's tombstone)."""
        if meta is not None:
            self.tombstones[task_id] = (int(meta[F.FENCE]), time.monotonic() + TOMBSTONE_TTL)

    def _first_fence(self, task_id: str, floor: int | None = None) -> int:
        """The fence of an invocation created anew: above ``floor`` (the incarnation it
        replaces) or its tombstone, and at least the clock in ms (start.lua)."""
        if floor is None:
            fence, until = self.tombstones.get(task_id, (0, 0.0))
            floor = fence if until > time.monotonic() else 0
        return max(floor + 1, now_ms())


def now_ms() -> int:
    return int(time.time() * 1000)
