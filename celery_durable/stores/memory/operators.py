"""The in-memory store's part for operators: reading, listing, forgetting, resuming."""

from __future__ import annotations

from collections.abc import Sequence

from celery_durable.journal.entries import Unreadable, read_entry
from celery_durable.journal.store import (
    SUMMARY_FIELDS,
    Fork,
    Position,
    Resumption,
    Stored,
    Summary,
    now,
)
from celery_durable.keys import LIVE_STATUSES
from celery_durable.keys import MetaField as F
from celery_durable.stores.memory.base import MemoryBase, now_ms


class Operators(MemoryBase):
    """Reading, listing, forgetting, resume, fork and purge (``JournalStore``)."""

    def forget(self, task_id: str) -> bool:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            self._bury(task_id, meta)
            self._drop(task_id)
            return meta is not None

    def read(self, task_id: str) -> Stored | None:
        return self.read_many([task_id])[0]

    def read_many(self, task_ids: Sequence[str]) -> list[Stored | None]:
        with self._lock:
            self.round_trips += 1
            found: list[Stored | None] = []
            for task_id in task_ids:
                meta = self._live(task_id)
                if meta is None:
                    found.append(None)
                else:
                    found.append(
                        (dict(meta), list(self.journals[task_id]), dict(self.done[task_id]))
                    )
            return found

    def list_ids(self, status: str | None, limit: int, offset: int = 0) -> list[str]:
        with self._lock:
            self.round_trips += 1
            ids = [i for i in list(self.meta) if self._live(i) is not None]
            if status in LIVE_STATUSES:
                ids = [i for i in ids if self.meta[i][F.STATUS] == status]
            ids.sort(key=lambda i: (-float(self.meta[i][F.CREATED_AT]), i))
            return ids[offset : offset + limit]

    def forget_index(self, task_ids: Sequence[str]) -> None:
        pass  # the memory store lists what it holds; nothing lingers

    def list_page(
        self,
        status: str | None,
        limit: int,
        after: Position | None = None,
        created_from: float | None = None,
        created_before: float | None = None,
    ) -> list[Position]:
        with self._lock:
            self.round_trips += 1
            found = []
            for task_id in list(self.meta):
                meta = self._live(task_id)
                if meta is None or (status in LIVE_STATUSES and meta[F.STATUS] != status):
                    continue
                created = float(meta[F.CREATED_AT])
                if created_from is not None and created < created_from:
                    continue
                if created_before is not None and created >= created_before:
                    continue
                if after is not None and (created, task_id) >= (after[1], after[0]):
                    continue
                found.append((created, task_id))
            found.sort(reverse=True)  # newest first, ties by id descending, as in Redis
            return [(task_id, created) for created, task_id in found[:limit]]

    def summaries(self, task_ids: Sequence[str]) -> list[Summary | None]:
        with self._lock:
            self.round_trips += 1
            found: list[Summary | None] = []
            for task_id in task_ids:
                meta = self._live(task_id)
                if meta is None:
                    found.append(None)
                else:
                    fields = {f: meta[f] for f in SUMMARY_FIELDS if f in meta}
                    found.append((fields, len(self.journals[task_id])))
            return found

    def count_live(self) -> dict[str, int]:
        with self._lock:
            self.round_trips += 1
            counts = dict.fromkeys(LIVE_STATUSES, 0)
            for task_id in list(self.meta):
                meta = self._live(task_id)
                if meta is not None and meta[F.STATUS] in counts:
                    counts[meta[F.STATUS]] += 1
            return counts

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None:
                return Resumption("gone")
            status = meta[F.STATUS]
            if status not in ("paused", "failed"):
                return Resumption("refused", status)
            if F.STEPS_UNTIL in meta and now_ms() >= int(meta[F.STEPS_UNTIL]):
                return Resumption("dropped", status)
            if require_call and F.CALL not in meta:
                return Resumption("no-call", status)
            journal = self.journals[task_id]
            dropped, dropped_at = None, -1
            if status == "failed" and journal:
                try:
                    last = read_entry(journal[-1])
                except Unreadable:  # not a failed step as written here: kept, as in Redis
                    last = {}
                if last.get("k") == "run" and last.get("s") == "error":
                    dropped, dropped_at = journal.pop(), len(journal)
            meta.update({
                F.FENCE: str(int(meta[F.FENCE]) + 1), F.STATUS: "paused",
                F.PAUSED_REASON: reason, F.UPDATED_AT: now(), F.DEATHS: "0",
                F.RELEASED: "resume",
            })  # fmt: skip
            for name in (F.OUTCOME, F.ATTEMPT, F.GUARD, F.LEASE, F.LEASE_UNTIL, F.AWAITING,
                         F.STEPS_UNTIL):  # fmt: skip
                meta.pop(name, None)
            self.expires_at.pop(task_id, None)
            self.steps_expire_at.pop(task_id, None)
            return Resumption("resumed", status, meta.get(F.CALL, ""), dropped, dropped_at)

    def fork(self, task_id: str, fork: Fork) -> bool:
        with self._lock:
            self.round_trips += 1
            if self._live(task_id) is not None:
                return False
            stamp = now()
            self.meta[task_id] = {
                F.TASK: fork.task_name, F.FINGERPRINT: fork.fingerprint, F.SEED: str(fork.seed),
                F.STATUS: "paused", F.CREATED_AT: stamp, F.UPDATED_AT: stamp,
                F.FENCE: str(self._first_fence(task_id)),
                F.FRONTIER: str(len(fork.entries)), F.DEATHS: "0", F.NESTING: "0",
                F.CALL: fork.call, F.PAUSED_REASON: fork.reason, F.RELEASED: "restart",
            }  # fmt: skip
            self.journals[task_id] = list(fork.entries)
            self.done[task_id] = dict(fork.completions)
            return True

    def forget_if(self, task_id: str, status: str, created_before: float) -> int:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None:
                return -1
            if meta[F.STATUS] != status or float(meta[F.CREATED_AT]) >= created_before:
                return 0
            self._bury(task_id, meta)
            self._drop(task_id)
            return 1

    def list_ids_before(
        self, status: str | None, before: float, limit: int, offset: int = 0
    ) -> list[str]:
        with self._lock:
            self.round_trips += 1
            ids = [i for i in list(self.meta) if self._live(i) is not None]
            ids = [i for i in ids if float(self.meta[i][F.CREATED_AT]) < before]
            if status in LIVE_STATUSES:
                ids = [i for i in ids if self.meta[i][F.STATUS] == status]
            ids.sort(key=lambda i: (float(self.meta[i][F.CREATED_AT]), i))
            return ids[offset : offset + limit]
