"""The in-memory store's part for recovery: the sweep's turn, and claims (recover.lua)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from celery_durable.keys import MetaField as F
from celery_durable.stores.memory.base import MemoryBase, now_ms

_RECOVERED = re.compile(r"(\d+):(\d+):(\d+)")


class Recovery(MemoryBase):
    """The recovery sweep's turn and claims (``JournalStore``)."""

    _turn_until = 0.0
    _turn_holder = ""

    def take_recovery_turn(self, seconds: float, holder: str = "") -> bool:
        with self._lock:
            self.round_trips += 1
            if time.monotonic() < self._turn_until:
                return bool(holder) and holder == self._turn_holder
            self._turn_until = time.monotonic() + seconds
            self._turn_holder = holder
            return True

    def recover(self, task_ids: Sequence[str], after: float) -> list[str | None]:
        with self._lock:
            self.round_trips += 1
            return [self._recover(task_id, int(after * 1000)) for task_id in task_ids]

    def _recover(self, task_id: str, after_ms: int) -> str | None:
        meta = self._live(task_id)
        if meta is None or meta[F.STATUS] != "running":
            return None
        at = now_ms()
        idle = max(int(meta.get(F.LEASE_UNTIL, "0")), int(meta.get(F.DUE, "0")))
        if at < idle + after_ms:
            return None
        count = 1
        last = _RECOVERED.fullmatch(meta.get(F.RECOVERED, ""))
        if last is not None and last[1] == meta[F.FENCE]:
            if at < int(last[3]):
                return None
            count = int(last[2]) + 1
        wait = after_ms * 2 ** min(count - 1, 5)
        meta[F.RECOVERED] = f"{meta[F.FENCE]}:{count}:{at + wait}"
        return meta.get(F.CALL, "")
