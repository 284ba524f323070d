"""The in-memory store's part for waiting: suspension, completions from outside, wake-ups."""

from __future__ import annotations

from collections.abc import Sequence

from celery_durable.journal.entries import PROOFS, Unreadable, read_entry
from celery_durable.journal.store import FINISHED, now
from celery_durable.keys import MetaField as F
from celery_durable.stores.memory.base import MemoryBase, now_ms


class Waiting(MemoryBase):
    """Suspension, completions and wake-ups (``JournalStore``)."""

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
        with self._lock:
            meta = self._running(task_id, fence, "suspend")
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            meta[F.UPDATED_AT] = now()
            meta[F.CALL] = call
            if cancellable and F.CANCEL in meta:  # it raises the cancel where it waits
                return "ready"
            if any(str(i) in self.done[task_id] for i in indexes):
                return "ready"
            wake_ms = int(wake_at * 1000) if wake_at else 0
            if wake_ms:
                if wake_ms <= now_ms():
                    return "ready"
                self.wakeups[task_id] = min(wake_ms, self.wakeups.get(task_id, wake_ms))
            meta.update({F.STATUS: "suspended", F.AWAITING: awaiting})
            return "suspended"

    def complete(self, task_id: str, index: int, kind: str, proof: str, outcome: str) -> int:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None or meta[F.STATUS] in FINISHED:
                return 0
            journal = self.journals[task_id]
            if not proof or not 0 <= index < len(journal):
                return 0
            try:
                entry = read_entry(journal[index])
            except Unreadable:
                return 0
            value = entry.get("v")
            if entry["k"] != kind or entry["s"] != "ok" or not isinstance(value, dict):
                return 0
            # A call journaled before calls had a token has none: its child's id proves it.
            secret = value.get(PROOFS.get(kind, "id"), value.get("id"))
            if secret != proof:
                return 0
            done = self.done[task_id]
            if str(index) in done:
                return 0
            done[str(index)] = outcome
            if meta[F.STATUS] == "suspended":
                self.wakeups[task_id] = 0
                return 2
            return 1

    def mark_sent(self, task_id: str, fence: int, index: int) -> None:
        with self._lock:
            self._running(task_id, fence, f"note the child at {index} of")
            self.done[task_id][f"{index}:sent"] = "1"

    def completions(self, task_id: str) -> dict[str, str]:
        with self._lock:
            self.round_trips += 1
            return dict(self.done.get(task_id, {})) if self._live(task_id) is not None else {}

    def claim_wakeups(self, limit: int, visibility: float) -> tuple[list[tuple[str, str]], float]:
        with self._lock:
            self.round_trips += 1
            now = now_ms()
            due = sorted((score, i) for i, score in self.wakeups.items() if score <= now)[:limit]
            hidden = now + int(visibility * 1000)
            for _, task_id in due:
                self.wakeups[task_id] = hidden
            following = min(self.wakeups.values(), default=None)
            until_next = -1.0 if following is None else max(0, following - now) / 1000
            return [(task_id, str(hidden)) for _, task_id in due], until_next

    def wake_state(self, task_id: str) -> tuple[str, str] | None:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            return None if meta is None else (meta[F.STATUS], meta.get(F.CALL, ""))

    def ack_wakeup(self, task_id: str, claim: str) -> None:
        with self._lock:
            self.round_trips += 1
            if str(self.wakeups.get(task_id)) == claim:
                del self.wakeups[task_id]
