"""An in-memory journal store with the Redis store's semantics, for unit tests.

It keeps nothing across processes, so it cannot make anything durable; use it to
test durable code's logic without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from celery_durable.errors import JournalError
from celery_durable.journal.store import FINISHED, Started


class MemoryJournalStore:
    """Keeps journals in dictionaries; counts calls the way Redis would see round trips."""

    def __init__(self) -> None:
        self.meta: dict[str, dict[str, str]] = {}
        self.journals: dict[str, list[str]] = {}
        self.expires_in: dict[str, float] = {}
        self.round_trips = 0

    def start(
        self, task_id: str, task_name: str, fingerprint: str, seed: int, retries: int = 0
    ) -> Started:
        self.round_trips += 1
        now = str(time.time())
        meta = self.meta.get(task_id)
        if meta is None:
            self.meta[task_id] = {
                "task": task_name,
                "fingerprint": fingerprint,
                "seed": str(seed),
                "status": "running",
                "created_at": now,
                "updated_at": now,
                "frontier": "0",
                "frontier_starts": "1",
                "retries": str(retries),
            }
            self.journals[task_id] = []
            return Started(True, task_name, fingerprint, seed, "running", None, [])
        if meta["status"] in FINISHED:
            return Started(
                False, meta["task"], meta["fingerprint"], int(meta["seed"]), meta["status"],
                meta.get("outcome"), [],
            )  # fmt: skip
        if (meta["task"], meta["fingerprint"]) != (task_name, fingerprint):
            return Started(
                False, meta["task"], meta["fingerprint"], int(meta["seed"]), meta["status"],
                None, [],
            )  # fmt: skip
        entries = list(self.journals[task_id])
        unclean = 0
        if meta.get("retries") == str(retries):
            unclean = max(int(meta.get("frontier_starts", "0")), 0)
            if meta.get("frontier") != str(len(entries)):
                unclean = min(unclean, 1)
        starts = unclean + 1
        meta.update(
            frontier=str(len(entries)), frontier_starts=str(starts), retries=str(retries),
            updated_at=now,
        )  # fmt: skip
        if meta["status"] == "paused":
            meta.update(status="running")
            meta.pop("paused_reason", None)
        return Started(
            False,
            meta["task"],
            meta["fingerprint"],
            int(meta["seed"]),
            meta["status"],
            meta.get("outcome"),
            entries,
            length=len(entries),
            crashes=starts - 1,
            attempt=meta.get("attempt"),
            guard=int(meta["guard"]) if "guard" in meta else None,
        )

    def append(self, task_id: str, index: int, entry: str, ends_attempts: bool) -> str | None:
        self.round_trips += 1
        if task_id not in self.meta:
            raise JournalError(f"cannot write step {index} of invocation {task_id}: it is gone")
        journal = self.journals[task_id]
        if len(journal) == index:
            journal.append(entry)
            if ends_attempts:
                self.meta[task_id].pop("attempt", None)
                self.meta[task_id].pop("guard", None)
            return None
        if len(journal) > index:
            return journal[index]
        raise JournalError(f"entry {index} written while the journal holds {len(journal)}")

    def record_attempt(self, task_id: str, index: int, attempt: str) -> str | None:
        found = self._mark(task_id, index, attempt=attempt, frontier_starts="0")
        if found is None:
            self.meta[task_id].pop("guard", None)
        return found

    def guard(self, task_id: str, index: int) -> str | None:
        return self._mark(task_id, index, guard=str(index))

    def _end_cleanly(self, task_id: str) -> None:
        starts = int(self.meta[task_id].get("frontier_starts", "0"))
        self.meta[task_id]["frontier_starts"] = str(starts - 1)

    def _mark(self, task_id: str, index: int, **fields: str) -> str | None:
        self.round_trips += 1
        if task_id not in self.meta:
            raise JournalError(f"cannot mark step {index} of invocation {task_id}: it is gone")
        journal = self.journals[task_id]
        if len(journal) > index:
            return journal[index]
        self.meta[task_id].update(fields)
        return None

    def finish(
        self, task_id: str, status: str, outcome: str, retention: float
    ) -> tuple[str, str] | None:
        self.round_trips += 1
        meta = self.meta.get(task_id)
        if meta is None:
            raise JournalError(f"cannot finish invocation {task_id}: it no longer exists")
        if meta["status"] in FINISHED:
            return meta["status"], meta["outcome"]
        meta.update(status=status, outcome=outcome, updated_at=str(time.time()))
        meta.pop("paused_reason", None)
        self.expires_in[task_id] = retention
        return None

    def pause(self, task_id: str, reason: str) -> None:
        self.round_trips += 1
        self.meta[task_id].update(status="paused", paused_reason=reason)
        self._end_cleanly(task_id)

    def read(self, task_id: str) -> tuple[dict[str, str], list[str]] | None:
        return self.read_many([task_id])[0]

    def read_many(self, task_ids: Sequence[str]) -> list[tuple[dict[str, str], list[str]] | None]:
        self.round_trips += 1
        return [
            (dict(self.meta[i]), list(self.journals[i])) if i in self.meta else None
            for i in task_ids
        ]

    def recent_ids(self, limit: int, offset: int = 0) -> list[str]:
        self.round_trips += 1
        newest_first = sorted(self.meta, key=lambda i: float(self.meta[i]["created_at"]))[::-1]
        return newest_first[offset : offset + limit]

    def forget_index(self, task_ids: Sequence[str]) -> None:
        pass
