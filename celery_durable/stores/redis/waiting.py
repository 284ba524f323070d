"""The Redis store's part for waiting: suspension, completions from outside, wake-ups.

A suspension schedules its wake-up in the wake-ups sorted set of its slot, in the same
script. On one Redis that is the one set the wake-up component claims from. On a
cluster each slot has its own; the set the component claims from is fed outside the
scripts: at once by the suspension or completion itself, and by a sweep every
``SWEEP_INTERVAL`` that one worker at a time runs, so a wake-up whose copy was missed
(its process died between the script and the copy) is late, never lost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery_durable.journal.store import now
from celery_durable.keys import MetaField
from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.base import RedisBase, ms

#: Seconds between two sweeps of a cluster's slots for wake-ups due soon.
SWEEP_INTERVAL = 30.0


class Waiting(RedisBase):
    """Suspension, completions and wake-ups (``JournalStore``)."""

    _next_sweep = 0.0

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
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        wake_ms = int(wake_at * 1000) if wake_at else 0
        with self._errors(task_id, "suspend"):
            state: str = self._write(
                scripts.SUSPEND, 6, k.meta, k.done, ix.running, ix.suspended,
                self._keys.wakeups_of(task_id), k.call,
                task_id, fence, awaiting, ",".join(map(str, indexes)), wake_ms, call, now(),
                "1" if cancellable else "0",
            )  # fmt: skip
            if state == "suspended" and wake_ms:
                self._copy_wakeup(task_id, wake_ms)
        return state

    def complete(self, task_id: str, index: int, kind: str, proof: str, outcome: str) -> int:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"complete {kind} {index} of"):
            reply = self._write(
                scripts.COMPLETE, 4, k.meta, k.journal, k.done, self._keys.wakeups_of(task_id),
                task_id, index, kind, proof, outcome,
            )  # fmt: skip
            if reply == 2:
                self._copy_wakeup(task_id, 0)
        return int(reply)

    def mark_sent(self, task_id: str, fence: int, index: int) -> None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"note the child at {index} of"):
            self._write(scripts.SENT, 2, k.meta, k.done, fence, index)

    def completions(self, task_id: str) -> dict[str, str]:
        with self._errors(task_id, "read the completions of"):
            found: Any = self._command("HGETALL", self._keys.invocation(task_id).done)
        if isinstance(found, list):  # RESP2 gives a hash as a flat list
            found = dict(zip(found[::2], found[1::2], strict=True))
        return dict(found)

    def claim_wakeups(self, limit: int, visibility: float) -> tuple[list[tuple[str, str]], float]:
        with self._errors("*", "claim the wake-ups of"):
            if self._keys.cluster:
                self._sweep()
            reply: list[str] = self._eval(
                scripts.CLAIM, 1, self._keys.wakeups, limit, ms(visibility)
            )
        *pairs, next_ms = reply
        claimed = list(zip(pairs[::2], pairs[1::2], strict=True))
        return claimed, float(next_ms) / 1000 if float(next_ms) >= 0 else -1.0

    def wake_state(self, task_id: str) -> tuple[str, str] | None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "read the call of"):
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("HMGET", k.meta, "status", MetaField.CALL)
            pipe.execute_command("GET", k.call)
            (status, legacy), call = pipe.execute()
        # An invocation started before the call had a key of its own keeps it in meta.
        return None if status is None else (status, call or legacy or "")

    def ack_wakeup(self, task_id: str, claim: str) -> None:
        with self._errors(task_id, "acknowledge the wake-up of"):
            self._eval(scripts.ACK_WAKEUP, 1, self._keys.wakeups, task_id, claim)

    # -- A cluster's wake-ups -----------------------------------------------------------

    def _copy_wakeup(self, task_id: str, due_ms: int) -> None:
        """Copy a wake-up of a slot's set into the set the workers claim from (cluster)."""
        if self._keys.cluster:
            self._command("ZADD", self._keys.wakeups, "LT", due_ms, task_id)

    def _drop_wakeup_copy(self, task_id: str) -> None:
        """Remove an awake invocation's wake-up from the set the workers claim from
        (cluster; on one Redis the start script removes it from the one set)."""
        if self._keys.cluster:
            self._command("ZREM", self._keys.wakeups, task_id)

    def _sweep(self) -> None:
        """Copy every slot's wake-ups due before the next sweep, if no other worker does."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        token = f"{time.time():.6f}"
        if not self._command("SET", self._keys.sweep_lock, token, "NX", "EX", int(SWEEP_INTERVAL)):
            return  # another worker sweeps this round
        horizon = int((time.time() + SWEEP_INTERVAL) * 1000)
        slots = [int(slot) for slot in self._command("SMEMBERS", self._keys.slots_in_use)]
        pipe = self._client.pipeline(transaction=False)
        for slot in slots:
            pipe.zrangebyscore(self._keys.wakeups_of_slot(slot), "-inf", horizon, withscores=True)
        due = [entry for reply in pipe.execute() for entry in reply]
        if due:
            pipe = self._client.pipeline(transaction=False)
            for task_id, score in due:
                pipe.zadd(self._keys.wakeups, {task_id: score}, lt=True)
            pipe.execute()
