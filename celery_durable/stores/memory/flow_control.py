"""The in-memory store's part for flow control: cancels, deadlines, concurrency keys
(``cancel.lua``, ``deadlines.lua``, ``acquire_slot.lua``, ``release_slots.lua``,
``check_holder.lua``, ``grant_slot.lua``)."""

from __future__ import annotations

from collections.abc import Sequence

from celery_durable.journal.store import FINISHED, Admission, Cancel, now
from celery_durable.keys import MetaField as F
from celery_durable.stores.memory.base import MemoryBase, now_ms


class FlowControl(MemoryBase):
    """Cancel, deadlines and concurrency keys (``JournalStore``)."""

    def cancel(self, task_id: str, reason: str) -> Cancel:
        with self._lock:
            self.round_trips += 1
            self.deadlines.pop(task_id, None)
            meta = self._live(task_id)
            if meta is None:
                return Cancel("gone")
            status = meta[F.STATUS]
            if status in FINISHED:
                return Cancel("finished", status)
            already = F.CANCEL in meta
            if not already:
                meta.update({F.CANCEL: reason, F.UPDATED_AT: now()})
            if status in ("suspended", "paused"):
                if status == "paused":
                    meta.update({F.RELEASED: "cancel", F.DEATHS: "0"})
                self.wakeups[task_id] = 0
                return Cancel("requested", status, already, woken=True)
            live = F.LEASE in meta and int(meta.get(F.LEASE_UNTIL, "0")) > now_ms()
            call = "" if live else meta.get(F.CALL, "")
            return Cancel("requested", status, already, call=call)

    def due_deadlines(self, limit: int) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            self.round_trips += 1
            at = now_ms()
            ordered = sorted((when, task_id) for task_id, when in self.deadlines.items())
            due = [(task_id, when / 1000) for when, task_id in ordered if when <= at][:limit]
            later = [when for when, _ in ordered if when > at]
            return due, (later[0] - at) / 1000 if later else -1.0

    # -- Concurrency keys ----------------------------------------------------------------

    def acquire_slot(self, key: str, task_id: str, limit: int) -> Admission:
        with self._lock:
            self.round_trips += 1
            holders = self.holders.setdefault(key, {})
            waiting = self.waiting.setdefault(key, {})
            if task_id in holders:
                return Admission("held")
            at = now_ms()
            waiting.setdefault(task_id, at)
            free = limit - len(holders)
            if free > 0 and _in_line(waiting).index(task_id) < free:
                del waiting[task_id]
                holders[task_id] = at
                return Admission("acquired")
            return Admission("queued", str(waiting[task_id]), _in_line(holders))

    def release_slots(self, key: str, task_ids: Sequence[str], limit: int) -> list[tuple[str, str]]:
        with self._lock:
            self.round_trips += 1
            holders = self.holders.setdefault(key, {})
            waiting = self.waiting.setdefault(key, {})
            for task_id in task_ids:
                holders.pop(task_id, None)
                waiting.pop(task_id, None)
            granted = []
            free = limit - len(holders)
            if free > 0:
                at = now_ms()
                for task_id in _in_line(waiting)[:free]:
                    granted.append((task_id, str(waiting.pop(task_id))))
                    holders[task_id] = at
            return granted

    def check_holders(self, task_ids: Sequence[str]) -> list[float | None]:
        with self._lock:
            self.round_trips += 1
            return [self._check_holder(task_id) for task_id in task_ids]

    def _check_holder(self, task_id: str) -> float | None:
        meta = self._live(task_id)
        if meta is None or meta[F.STATUS] in FINISHED:
            return None
        if meta[F.STATUS] != "running" or F.LEASE not in meta:
            return -1.0
        left = int(meta.get(F.LEASE_UNTIL, "0")) - now_ms()
        if left <= 0:
            meta[F.FENCE] = str(int(meta[F.FENCE]) + 1)
            return None
        return left / 1000

    def grant_slot(self, task_id: str, grant: str) -> int:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None or meta[F.STATUS] in FINISHED:
                return 0
            self.done[task_id][grant] = "1"
            if meta[F.STATUS] == "suspended":
                self.wakeups[task_id] = 0
                return 2
            return 1

    def slot_state(self, key: str) -> tuple[list[str], list[str]]:
        with self._lock:
            self.round_trips += 1
            return _in_line(self.holders.get(key, {})), _in_line(self.waiting.get(key, {}))


def _in_line(members: dict[str, int]) -> list[str]:
    """Members of a sorted set in its order: by score, then by id."""
    return [task_id for _, task_id in sorted((score, i) for i, score in members.items())]
