"""The in-memory store's part for one execution: start, steps, lease, finish."""

from __future__ import annotations

import time
from collections.abc import Sequence

from celery_durable.errors import JournalError, LeaseLost
from celery_durable.journal.store import (
    FINISHED,
    Cancelling,
    Reopening,
    Started,
    StartRequest,
    not_running,
    now,
)
from celery_durable.keys import MetaField as F
from celery_durable.stores.memory.base import now_ms
from celery_durable.stores.memory.flow_control import FlowControl
from celery_durable.stores.memory.operators import Operators
from celery_durable.stores.memory.recovery import Recovery
from celery_durable.stores.memory.waiting import Waiting


class MemoryJournalStore(Waiting, Operators, Recovery, FlowControl):
    """The ``JournalStore`` of one process, in memory (``stores/memory/__init__``)."""

    def start(self, task_id: str, request: StartRequest) -> Started:
        with self._lock:
            self.round_trips += 1
            self._sweep()
            meta = self._live(task_id)
            stamp, at_ms = now(), now_ms()
            until = str(at_ms + int(request.lease_ttl * 1000))
            if meta is None or (
                meta[F.STATUS] == "replaced" and request.nesting > int(meta.get(F.NESTING, "0"))
            ):
                fence = self._first_fence(task_id, None if meta is None else int(meta[F.FENCE]))
                self.meta[task_id] = {
                    F.TASK: request.task_name, F.FINGERPRINT: request.fingerprint,
                    F.SEED: str(request.seed), F.STATUS: "running", F.CREATED_AT: stamp,
                    F.UPDATED_AT: stamp, F.FENCE: str(fence), F.LEASE: request.holder,
                    F.LEASE_UNTIL: until, F.FRONTIER: "0", F.DEATHS: "0",
                    F.NESTING: str(request.nesting),
                }  # fmt: skip
                if request.call:
                    self.meta[task_id][F.CALL] = request.call
                if request.timeout > 0:
                    deadline = at_ms + int(request.timeout * 1000)
                    self.meta[task_id][F.DEADLINE] = str(deadline)
                    self.deadlines[task_id] = deadline
                if request.concurrency:
                    self.meta[task_id][F.CONCURRENCY_KEY] = request.concurrency
                self.journals[task_id] = []
                self.done[task_id] = {}
                self.expires_at.pop(task_id, None)
                self.steps_expire_at.pop(task_id, None)
                return Started("run", created=True, fence=fence, seed=request.seed)
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
            if status == "paused" and F.RELEASED not in meta:
                return Started("paused", status=status)
            lease_until = int(meta.get(F.LEASE_UNTIL, "0"))
            held = F.LEASE in meta and meta[F.FENCE] != str(request.ended_fence)
            if held and lease_until > at_ms:
                return Started("busy", busy_for=(lease_until - at_ms) / 1000, holder=meta[F.LEASE])
            n = len(self.journals[task_id])
            deaths = int(meta.get(F.DEATHS, "0"))
            if held:  # expired without being released: its holder died
                deaths = deaths + 1 if meta.get(F.FRONTIER) == str(n) else 1
            elif meta.get(F.FRONTIER) != str(n):
                deaths = 0
            fence = int(meta[F.FENCE]) + 1
            meta.update({
                F.FENCE: str(fence), F.LEASE: request.holder, F.LEASE_UNTIL: until,
                F.FRONTIER: str(n), F.DEATHS: str(deaths), F.UPDATED_AT: stamp,
            })  # fmt: skip
            if status != "running":
                meta[F.STATUS] = "running"
                meta.pop(F.PAUSED_REASON, None)
                meta.pop(F.AWAITING, None)
                meta.pop(F.RELEASED, None)
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
                cancel=meta.get(F.CANCEL),
            )

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | Cancelling | None:
        with self._lock:
            meta = self._running(task_id, fence, f"write step {index} of")
            journal = self.journals[task_id]
            if len(journal) == index:
                journal.append(entry)
                if ends_attempts:
                    meta.pop(F.ATTEMPT, None)
                    meta.pop(F.GUARD, None)
                return _cancelling(meta)
            if len(journal) > index:
                return journal[index]
            raise JournalError(f"entry {index} written while the journal holds {len(journal)}")

    def record_attempt(
        self,
        task_id: str,
        fence: int,
        index: int,
        attempt: str,
        release: bool = True,
        retry_in: float = 0.0,
        cancellable: bool = True,
    ) -> str | Cancelling | None:
        with self._lock:
            meta = self._running(task_id, fence, f"record a failed attempt of step {index} of")
            journal = self.journals[task_id]
            if len(journal) > index:
                return journal[index]
            meta.update({F.ATTEMPT: attempt, F.UPDATED_AT: now(), F.DEATHS: "0"})
            if release:
                for name in (F.GUARD, F.LEASE, F.LEASE_UNTIL):
                    meta.pop(name, None)
                cancelled = _cancelling(meta) if cancellable else None
                due_in = 0 if cancelled else max(0, int(retry_in * 1000))
                meta[F.DUE] = str(now_ms() + due_in)
                return cancelled
            return None

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        with self._lock:
            meta = self._running(task_id, fence, f"guard at-most-once step {index} of")
            journal = self.journals[task_id]
            if len(journal) > index:
                return journal[index]
            meta[F.GUARD] = str(index)
            return None

    def release(
        self,
        task_id: str,
        fence: int,
        fingerprint: str = "",
        retry_in: float = 0.0,
        call: str = "",
        reopen: Reopening | None = None,
        cancellable: bool = True,
    ) -> bool | Cancelling:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None or meta[F.FENCE] != str(fence) or meta[F.STATUS] != "running":
                return False
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            meta[F.UPDATED_AT] = now()
            cancelled = _cancelling(meta) if cancellable else None
            meta[F.DUE] = str(now_ms() + (0 if cancelled else max(0, int(retry_in * 1000))))
            if fingerprint:
                meta[F.FINGERPRINT] = fingerprint
            if call:
                meta[F.CALL] = call
            journal = self.journals[task_id]
            if reopen is not None and reopen.start < len(journal) and journal[-1] == reopen.last:
                del journal[reopen.start :]
                meta[F.ATTEMPT] = reopen.attempt
            return cancelled or True

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool | Cancelling]:
        with self._lock:
            self.round_trips += 1
            renewed: list[bool | Cancelling] = []
            for task_id, fence in leases:
                meta = self._live(task_id)
                if meta is not None and int(meta[F.FENCE]) < fence:
                    renewed.append(True)  # lost writes: the holder's next write says so
                    continue
                ok = meta is not None and meta[F.FENCE] == str(fence) and F.LEASE in meta
                if meta is not None and ok:
                    meta[F.LEASE_UNTIL] = str(now_ms() + int(ttl * 1000))
                    renewed.append(_cancelling(meta) or True)
                else:
                    renewed.append(False)
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
        journal_retention: float | None = None,
        entries: Sequence[str] | None = None,
        held_call: str = "",
    ) -> tuple[str, str] | None:
        # Kept as they are: the memory store has nothing to gain from packing them.
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
            elif meta[F.STATUS] != "running":
                raise LeaseLost(not_running(task_id, "finish", meta[F.STATUS]))
            meta.update({F.STATUS: status, F.OUTCOME: outcome, F.UPDATED_AT: now()})
            if status == "replaced":
                meta[F.NESTING] = str(nesting)
            if call:
                meta[F.CALL] = call
            for name in (F.LEASE, F.LEASE_UNTIL, F.PAUSED_REASON, F.ATTEMPT, F.GUARD, F.AWAITING,
                         F.RELEASED, F.FRONTIER, F.DUE, F.RECOVERED):  # fmt: skip
                meta.pop(name, None)
            if meta.get(F.DEATHS, "0") == "0":
                meta.pop(F.DEATHS, None)
            if status != "replaced":
                meta.pop(F.NESTING, None)
            self.expires_at[task_id] = time.monotonic() + retention
            steps = retention if journal_retention is None else min(journal_retention, retention)
            if steps < retention:
                meta[F.STEPS_UNTIL] = str(now_ms() + int(steps * 1000))
                self.steps_expire_at[task_id] = time.monotonic() + steps
                if steps <= 0:
                    self._drop_steps(task_id)
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
            meta.update({F.STATUS: "paused", F.PAUSED_REASON: reason, F.UPDATED_AT: now()})
            meta.pop(F.LEASE, None)
            meta.pop(F.LEASE_UNTIL, None)
            return "paused"

    def pause_finished(self, task_id: str, status: str, outcome: str, reason: str) -> str:
        with self._lock:
            self.round_trips += 1
            meta = self._live(task_id)
            if meta is None:
                return ""
            if meta[F.STATUS] != status or meta.get(F.OUTCOME) != outcome:
                return meta[F.STATUS]
            meta.update({F.STATUS: "paused", F.PAUSED_REASON: reason, F.UPDATED_AT: now()})
            self.expires_at.pop(task_id, None)
            if self.steps_expire_at.pop(task_id, None) is not None:  # still kept: they stay
                meta.pop(F.STEPS_UNTIL, None)
            return "paused"


def _cancelling(meta: dict[str, str]) -> Cancelling | None:
    """What a write's reply says of a cancel: ``Cancelling`` when there is one."""
    reason = meta.get(F.CANCEL)
    return None if reason is None else Cancelling(reason)
