"""An in-memory journal store with the Redis store's semantics, for one process.

It keeps journals for eager execution and direct calls, and for unit tests of durable
code. It keeps nothing across processes, so it cannot make anything durable. Each
method mirrors one Lua script of ``stores/redis/lua``; ``tests/contract`` runs the
same behaviour against both stores so that they cannot drift apart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from celery_durable.errors import JournalError, LeaseLost
from celery_durable.journal.store import (
    FINISHED,
    Fork,
    Resumption,
    Started,
    StartRequest,
    Stored,
)
from celery_durable.keys import LIVE_STATUSES
from celery_durable.keys import MetaField as F


class MemoryJournalStore:
    """Keeps journals in dictionaries; counts calls the way Redis would see round trips."""

    def __init__(self) -> None:
        self.meta: dict[str, dict[str, str]] = {}
        self.journals: dict[str, list[str]] = {}
        self.done: dict[str, dict[str, str]] = {}
        self.wakeups: dict[str, int] = {}
        """Suspended invocations by when to wake them, ms (a sorted set in Redis)."""
        self.expires_at: dict[str, float] = {}
        self.round_trips = 0
        self._swept_at = time.monotonic()
        # Executions of one process may run in threads (a threads pool, eager tasks).
        self._lock = threading.RLock()

    # -- An execution -------------------------------------------------------------------

    def start(self, task_id: str, request: StartRequest) -> Started:
        with self._lock:
            self.round_trips += 1
            self._sweep()
            meta = self._live(task_id)
            now, now_ms = _now(), _now_ms()
            until = str(now_ms + int(request.lease_ttl * 1000))
            if meta is None or (
                meta[F.STATUS] == "replaced" and request.nesting > int(meta.get(F.NESTING, "0"))
            ):
                self.meta[task_id] = {
                    F.TASK: request.task_name, F.FINGERPRINT: request.fingerprint,
                    F.SEED: str(request.seed), F.STATUS: "running", F.CREATED_AT: now,
                    F.UPDATED_AT: now, F.FENCE: "1", F.LEASE: request.holder,
                    F.LEASE_UNTIL: until, F.FRONTIER: "0", F.DEATHS: "0",
                    F.NESTING: str(request.nesting),
                }  # fmt: skip
                if request.call:
                    self.meta[task_id][F.CALL] = request.call
                self.journals[task_id] = []
                self.done[task_id] = {}
                self.expires_at.pop(task_id, None)
                return Started("run", created=True, fence=1, seed=request.seed)
            status = meta[F.STATUS]
            if status == "replaced":
                return Started("done", status=status)
            if (meta[F.TASK], meta[F.FINGERPRINT]) != (request.task_name, request.fingerprint):
                return Started(
                    "conflict",
                    status=status,
                    task_name=meta[F.TASK],
                    fingerprint=meta[F.FINGERPRINT],
                )
            if status in FINISHED:
                return Started("done", status=status, outcome=meta.get(F.OUTCOME) or None)
            lease_until = int(meta.get(F.LEASE_UNTIL, "0"))
            held = F.LEASE in meta and meta[F.FENCE] != str(request.ended_fence)
            if held and lease_until > now_ms:
                return Started("busy", busy_for=(lease_until - now_ms) / 1000, holder=meta[F.LEASE])
            n = len(self.journals[task_id])
            deaths = int(meta.get(F.DEATHS, "0"))
            if held:  # expired without being released: its holder died
                deaths = deaths + 1 if meta.get(F.FRONTIER) == str(n) else 1
            elif meta.get(F.FRONTIER) != str(n):
                deaths = 0
            fence = int(meta[F.FENCE]) + 1
            meta.update({
                F.FENCE: str(fence), F.LEASE: request.holder, F.LEASE_UNTIL: until,
                F.FRONTIER: str(n), F.DEATHS: str(deaths), F.UPDATED_AT: now,
            })  # fmt: skip
            if status != "running":
                meta[F.STATUS] = "running"
                meta.pop(F.PAUSED_REASON, None)
                meta.pop(F.AWAITING, None)
                self.wakeups.pop(task_id, None)  # it is awake
            return Started(
                "run",
                status=status,
                fence=fence,
                seed=int(meta[F.SEED]),
                entries=list(self.journals[task_id]),
                deaths=deaths,
                attempt=meta.get(F.ATTEMPT),
                guard=int(meta[F.GUARD]) if F.GUARD in meta else None,
                completions=dict(self.done[task_id]),
            )

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | None:
        with self._lock:
            meta = self._fenced(task_id, fence, f"write step {index} of")
            journal = self.journals[task_id]
            if len(journal) == index:
                journal.append(entry)
                if ends_attempts:
                    meta.pop(F.ATTEMPT, None)
                    meta.pop(F.GUARD, None)
                return None
            if len(journal) > index:
                return journal[index]
            raise JournalError(f"entry {index} written while the journal holds {len(journal)}")

    def record_attempt(
        self, task_id: str, fence: int, index: int, attempt: str, release: bool = True
    ) -> str | None:
        with self._lock:
            meta = self._fenced(task_id, fence, f"record a failed attempt of step {index} of")
            journal = self.journals[task_id]
            if len(journal) > index:
                return journal[index]
            meta.update({F.ATTEMPT: attempt, F.UPDATED_AT: _now(), F.DEATHS: "0"})
            if release:
                for name in (F.GUARD, F.LEASE, F.LEASE_UNTIL):
                    meta.pop(name, None)
            return None

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        with self._lock:
            meta = self._fenced(task_id, fence, f"guard at-most-once step {index} of")
            journal = self.journals[task_id]
            if len(journal) > index:
                return journal[index]
            meta[F.GUARD] = str(index)
            return None

    def release(self, task_id: str, fence: int, fingerprint: str = "") -> bool:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None or meta[F.FENCE] != str(fence):
                return False
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            meta[F.UPDATED_AT] = _now()
            if fingerprint:
                meta[F.FINGERPRINT] = fingerprint
            return True

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool]:
        with self._lock:
            self.round_trips += 1
            renewed = []
            for task_id, fence in leases:
                meta = self._live(task_id)
                ok = meta is not None and meta[F.FENCE] == str(fence) and F.LEASE in meta
                if meta is not None and ok:
                    meta[F.LEASE_UNTIL] = str(_now_ms() + int(ttl * 1000))
                renewed.append(ok)
            return renewed

    def break_lease(self, task_id: str, holder: str) -> bool:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None or meta.get(F.LEASE) != holder:
                return False
            meta[F.LEASE_UNTIL] = "0"
            return True

    def finish(
        self,
        task_id: str,
        fence: int | None,
        status: str,
        outcome: str,
        retention: float,
        nesting: int = 0,
        call: str = "",
    ) -> tuple[str, str] | None:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None:
                raise LeaseLost(f"cannot finish invocation {task_id}: it no longer exists")
            if meta[F.STATUS] in FINISHED:
                return meta[F.STATUS], meta.get(F.OUTCOME, "")
            if fence is None:
                meta[F.FENCE] = str(int(meta[F.FENCE]) + 1)
            elif meta[F.FENCE] != str(fence):
                raise LeaseLost(f"cannot finish invocation {task_id}: another execution holds it")
            meta.update({F.STATUS: status, F.OUTCOME: outcome, F.UPDATED_AT: _now()})
            if status == "replaced":
                meta[F.NESTING] = str(nesting)
            if call:
                meta[F.CALL] = call
            for name in (F.LEASE, F.LEASE_UNTIL, F.PAUSED_REASON, F.ATTEMPT, F.GUARD, F.AWAITING):
                meta.pop(name, None)
            self.expires_at[task_id] = time.monotonic() + retention
            self.wakeups.pop(task_id, None)
            return None

    def pause(
        self, task_id: str, fence: int, reason: str, call: str = "", attempt: str = ""
    ) -> str:
        with self._lock:
            meta = self._fenced(task_id, fence, "pause")
            if meta[F.STATUS] != "running":
                return meta[F.STATUS]
            if call:
                meta[F.CALL] = call
            if attempt:
                meta[F.ATTEMPT] = attempt
            meta.update({F.STATUS: "paused", F.PAUSED_REASON: reason, F.UPDATED_AT: _now()})
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            return "paused"

    # -- Waiting ------------------------------------------------------------------------

    def suspend(
        self,
        task_id: str,
        fence: int,
        awaiting: str,
        indexes: Sequence[int],
        wake_at: float,
        call: str,
    ) -> str:
        with self._lock:
            meta = self._fenced(task_id, fence, "suspend")
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            meta[F.UPDATED_AT] = _now()
            meta[F.CALL] = call
            if any(str(i) in self.done[task_id] for i in indexes):
                return "ready"
            wake_ms = int(wake_at * 1000) if wake_at else 0
            if wake_ms:
                if wake_ms <= _now_ms():
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
            if index >= len(journal):
                return 0
            entry = json.loads(journal[index])
            value = entry.get("v")
            if entry.get("k") != kind or not isinstance(value, dict) or value.get("id") != proof:
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
            self._fenced(task_id, fence, f"note the child at {index} of")
            self.done[task_id][f"{index}:sent"] = "1"

    def completions(self, task_id: str) -> dict[str, str]:
        with self._lock:
            self.round_trips += 1
            return dict(self.done.get(task_id, {})) if self._live(task_id) is not None else {}

    def claim_wakeups(self, limit: int, visibility: float) -> tuple[list[tuple[str, str]], float]:
        with self._lock:
            self.round_trips += 1
            now = _now_ms()
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

    # -- Operators ----------------------------------------------------------------------

    def forget(self, task_id: str) -> bool:
        with self._lock:
            self.round_trips += 1
            existed = self._live(task_id) is not None
            self._drop(task_id)
            return existed

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

    # -- Plumbing -----------------------------------------------------------------------

    def _live(self, task_id: str) -> dict[str, str] | None:
        """The metadata of ``task_id``, after dropping it if its retention has passed."""
        expires = self.expires_at.get(task_id)
        if expires is not None and expires <= time.monotonic():
            self._drop(task_id)
        return self.meta.get(task_id)

    def _sweep(self) -> None:
        """Drop every invocation whose retention has passed, at most once a second."""
        now = time.monotonic()
        if now - self._swept_at > 1.0:
            self._swept_at = now
            for task_id in [i for i, at in self.expires_at.items() if at <= now]:
                self._drop(task_id)

    def _drop(self, task_id: str) -> None:
        self.wakeups.pop(task_id, None)
        self.meta.pop(task_id, None)
        self.journals.pop(task_id, None)
        self.done.pop(task_id, None)
        self.expires_at.pop(task_id, None)

    def _fenced(self, task_id: str, fence: int, action: str) -> dict[str, str]:
        self.round_trips += 1
        meta = self._live(task_id)
        if meta is None:
            raise LeaseLost(f"cannot {action} invocation {task_id}: it no longer exists")
        if meta[F.FENCE] != str(fence):
            raise LeaseLost(f"cannot {action} invocation {task_id}: another execution holds it")
        return meta

    # -- Operators: resume, fork, purge ---------------------------------------------------

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None:
                return Resumption("gone")
            status = meta[F.STATUS]
            if status not in ("paused", "failed"):
                return Resumption("refused", status)
            if require_call and F.CALL not in meta:
                return Resumption("no-call", status)
            journal = self.journals[task_id]
            dropped, dropped_at = None, -1
            if status == "failed" and journal:
                last = json.loads(journal[-1])
                if last["k"] == "run" and last["s"] == "error":
                    dropped, dropped_at = journal.pop(), len(journal)
            meta.update({
                F.FENCE: str(int(meta[F.FENCE]) + 1), F.STATUS: "paused",
                F.PAUSED_REASON: reason, F.UPDATED_AT: _now(), F.DEATHS: "0",
            })  # fmt: skip
            for name in (F.OUTCOME, F.ATTEMPT, F.GUARD, F.LEASE, F.LEASE_UNTIL, F.AWAITING):
                meta.pop(name, None)
            self.expires_at.pop(task_id, None)
            return Resumption("resumed", status, meta.get(F.CALL, ""), dropped, dropped_at)

    def fork(self, task_id: str, fork: Fork) -> bool:
        with self._lock:
            self.round_trips += 1
            if self._live(task_id) is not None:
                return False
            now = _now()
            self.meta[task_id] = {
                F.TASK: fork.task_name, F.FINGERPRINT: fork.fingerprint, F.SEED: str(fork.seed),
                F.STATUS: "paused", F.CREATED_AT: now, F.UPDATED_AT: now, F.FENCE: "1",
                F.FRONTIER: str(len(fork.entries)), F.DEATHS: "0", F.NESTING: "0",
                F.CALL: fork.call, F.PAUSED_REASON: fork.reason,
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


def _now() -> str:
    return f"{time.time():.6f}"


def _now_ms() -> int:
    return int(time.time() * 1000)
