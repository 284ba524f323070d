"""The Redis store's part for flow control: cancels, deadlines and concurrency keys.

A cancel and a deadline act on one invocation (its hash slot). A concurrency key's
holders and waiters live under the key's own hash tag: on a Redis Cluster in another
slot than the invocations they list, so a script touches either the key or one
invocation, never both (``celery_durable.concurrency`` says how they stay in step).
On a cluster each slot keeps its invocations' deadlines; the set the sweep reads is fed
outside the scripts, as the wake-ups' is (``waiting``): at once when an invocation with
a deadline is created, and by the sweep of every slot that copies the wake-ups.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery_durable.journal.store import Admission, Cancel, Cancelling, now
from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.base import RedisBase
from celery_durable.stores.redis.waiting import SWEEP_INTERVAL


def cancelling(reply: Any) -> str | Cancelling | None:
    """The reply of a journal write: None, the entry that was there first, or (for
    ``{'cancel', reason}``: the invocation was cancelled) a ``Cancelling``."""
    if isinstance(reply, list):
        return Cancelling(reply[1])
    written: str | None = reply
    return written


class FlowControl(RedisBase):
    """Cancel, deadlines and concurrency keys (``JournalStore``)."""

    # -- Cancel and deadlines ------------------------------------------------------------

    def cancel(self, task_id: str, reason: str) -> Cancel:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "cancel"):
            reply: list[Any] = self._write(
                scripts.CANCEL, 4, k.meta, self._keys.wakeups_of(task_id),
                self._keys.deadlines_of(task_id), k.call, task_id, reason, now(),
            )  # fmt: skip
            if self._keys.cluster:  # the copy the sweep reads (its slot's was dropped)
                self._command("ZREM", self._keys.deadlines, task_id)
            if reply[0] == "requested" and int(reply[3]):
                self._wake_now(task_id)
        if reply[0] == "gone":
            return Cancel("gone")
        if reply[0] == "finished":
            return Cancel("finished", reply[1])
        _, status, already, woken, call = reply
        return Cancel("requested", status, bool(int(already)), bool(int(woken)), call)

    def due_deadlines(self, limit: int) -> tuple[list[tuple[str, float]], float]:
        with self._errors("*", "read the deadlines of"):
            if self._keys.cluster:
                self._sweep_deadlines()
            reply: list[str] = self._eval(scripts.DEADLINES, 1, self._keys.deadlines, limit)
        *due, wait_ms = reply
        pairs = [(i, float(at) / 1000) for i, at in zip(due[::2], due[1::2], strict=True)]
        return pairs, float(wait_ms) / 1000 if float(wait_ms) >= 0 else -1.0

    def _copy_deadline(self, task_id: str, timeout: float) -> None:
        """Copy a new invocation's deadline into the set the sweep reads (cluster only).

        From this process's clock: off by the skew between it and Redis's, and a copy
        missed (the process died right after the start) is made by ``_sweep_deadlines``.
        """
        if self._keys.cluster:
            due_ms = int((float(now()) + timeout) * 1000)
            self._command("ZADD", self._keys.deadlines, due_ms, task_id)

    def _sweep_deadlines(self) -> None:
        """Copy every slot's deadlines into the set the sweep reads, once per
        ``waiting.SWEEP_INTERVAL`` (cluster only)."""
        if not self._deadline_sweep_due():
            return
        slots = [int(slot) for slot in self._command("SMEMBERS", self._keys.slots_in_use)]
        pipe = self._client.pipeline(transaction=False)
        for slot in slots:
            pipe.zrange(self._keys.deadlines_of_slot(slot), 0, -1, withscores=True)
        found = [entry for reply in pipe.execute() for entry in reply]
        if found:
            pipe = self._client.pipeline(transaction=False)
            for task_id, score in found:
                pipe.zadd(self._keys.deadlines, {task_id: score})
            pipe.execute()

    _next_deadline_sweep = 0.0

    def _deadline_sweep_due(self) -> bool:
        if time.monotonic() < self._next_deadline_sweep:
            return False
        self._next_deadline_sweep = time.monotonic() + SWEEP_INTERVAL
        return True

    def _wake_now(self, task_id: str) -> None:
        """Copy a wake-up due now into the set the workers claim from (cluster only; on
        one Redis the script wrote it there)."""
        if self._keys.cluster:
            self._command("ZADD", self._keys.wakeups, "LT", 0, task_id)

    # -- Concurrency keys ----------------------------------------------------------------

    def acquire_slot(self, key: str, task_id: str, limit: int) -> Admission:
        c = self._keys.concurrency(key)
        with self._errors(task_id, f"take a slot of key {key!r} for"):
            reply: list[Any] = self._write(
                scripts.ACQUIRE_SLOT, 2, c.holders, c.waiting, task_id, limit
            )
        if reply[0] == "queued":
            return Admission("queued", str(reply[1]), list(reply[2]))
        return Admission(reply[0])

    def release_slots(self, key: str, task_ids: Sequence[str], limit: int) -> list[tuple[str, str]]:
        c = self._keys.concurrency(key)
        with self._errors(",".join(task_ids[:3]), f"give back the slot of key {key!r} of"):
            reply: list[str] = self._write(
                scripts.RELEASE_SLOTS, 2, c.holders, c.waiting, limit, *task_ids
            )
        return list(zip(reply[::2], [str(t) for t in reply[1::2]], strict=True))

    def check_holders(self, task_ids: Sequence[str]) -> list[float | None]:
        if not task_ids:
            return []

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                meta = self._keys.invocation(task_id).meta
                pipe.execute_command("EVALSHA", scripts.CHECK_HOLDER.sha, 1, meta)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(task_ids[0], "check the slot holder"):
            replies = self._loading_scripts(call)
        return [None if r == -1 else -1.0 if r == -2 else int(r) / 1000 for r in replies]

    def grant_slot(self, task_id: str, grant: str) -> int:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "hand a slot to"):
            reply = self._write(
                scripts.GRANT_SLOT, 3, k.meta, k.done, self._keys.wakeups_of(task_id),
                task_id, grant,
            )  # fmt: skip
            if reply == 2:
                self._wake_now(task_id)
        return int(reply)

    def slot_state(self, key: str) -> tuple[list[str], list[str]]:
        c = self._keys.concurrency(key)
        with self._errors("*", f"read key {key!r} of"):
            pipe = self._client.pipeline(transaction=False)
            pipe.zrange(c.holders, 0, -1)
            pipe.zrange(c.waiting, 0, -1)
            holders, waiting = pipe.execute()
        return list(holders), list(waiting)
