"""The chaos run's machinery: a private Redis, worker slots and the driver.

``ChaosRun.drive`` sends the invocations and, for the duration, SIGKILLs workers (the
whole process group, sometimes one prefork child), sends duplicates of running
invocations and kills and restarts the private Redis. ``ChaosRun.drain`` then waits
until everything finished; ``verdict.verdict`` then judges what ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from celery_durable.runtime import release_runtime, runtime_for
from tests.chaos import harness
from tests.processes import RedisServer, Worker, start_worker, wait_for

EVIDENCE_URL = os.environ.get(harness.ENV_EVIDENCE_URL, "redis://127.0.0.1:6379/0")

#: (slot, pool, concurrency): the workers the run keeps alive.
SLOTS = (("solo-a", "solo", 1), ("prefork", "prefork", 2), ("solo-b", "solo", 1))
#: Seconds between two kills, and between two duplicate deliveries (uniform).
KILL_EVERY = (2.0, 5.0)
DUPLICATE_EVERY = (0.2, 0.8)
#: Share of kills of the prefork worker that kill one pool child instead of the group.
CHILD_KILL_SHARE = 0.3
#: Seconds the private Redis stays down at a restart (uniform).
REDIS_DOWNTIME = (0.3, 2.0)
#: After a kill, let the dead processes' last bytes reach Redis before reading markers.
SETTLE = 0.2
#: Seconds with nothing queued, held or running after which draining stops waiting.
STUCK = 15.0


# -- Workers ------------------------------------------------------------------------------


@dataclass
class WorkerProcess(Worker):
    """One incarnation of a worker slot."""

    slot: str = ""
    incarnation: str = ""
    pool: str = ""
    started_at: float = 0.0
    ready_at: float | None = None
    killed_at: float | None = None

    def ready(self) -> bool:
        """Whether it is alive and was ready once; unlike ``is_ready``, never raises."""
        if self.ready_at is None and self.alive() and self.is_ready():
            self.ready_at = time.time()
        return self.ready_at is not None and self.alive()


# -- The run ------------------------------------------------------------------------------


@dataclass
class Settings:
    seconds: float
    invocations: int
    seed: int
    redis_restarts: int


@dataclass
class ChaosRun:
    """One chaos run: its private Redis, workers, invocations and what the driver did."""

    settings: Settings
    tmp_path: Path
    prefix: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:10]}")
    events: list[str] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    send_errors: list[str] = field(default_factory=list)
    orders: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)
        self.ev = harness.Evidence(self.prefix)
        self.evidence = redis.Redis.from_url(EVIDENCE_URL, decode_responses=True)
        self.evidence.ping()
        # AOF, fsync always: a restart loses nothing Redis acknowledged.
        self.redis = RedisServer(
            data_dir=self.tmp_path / "redis",
            options=("--appendonly", "yes", "--appendfsync", "always"),
        )
        self.redis.start()
        self.app = harness.make_app(self.redis.url, self.prefix)
        self.private = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.current: dict[str, WorkerProcess] = {}
        self.workers: list[WorkerProcess] = []
        self.generation: Counter[str] = Counter()
        self.t0 = time.time()

    # -- Bookkeeping --------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"{time.time() - self.t0:8.3f}s {text}"
        self.events.append(line)

    def task_id(self, number: int) -> str:
        return f"{self.prefix}-{number:05d}"

    # -- Workers ------------------------------------------------------------------------

    def start_worker(self, slot: str) -> WorkerProcess:
        pool, concurrency = next((p, c) for s, p, c in SLOTS if s == slot)
        self.generation[slot] += 1
        incarnation = f"{slot}.{self.generation[slot]}"
        environ = {
            harness.ENV_BROKER_URL: self.redis.url,
            harness.ENV_EVIDENCE_URL: EVIDENCE_URL,
            harness.ENV_PREFIX: self.prefix,
            harness.ENV_INCARNATION: incarnation,
        }
        started = start_worker(
            "tests.chaos.proj",
            f"{self.prefix}-{incarnation}",
            [harness.queue_name(self.prefix)],
            self.tmp_path / f"worker-{incarnation}.log",
            environ,
            pool,
            concurrency,
            wait=False,
        )
        worker = WorkerProcess(
            started.name, started.process, started.log_path, slot, incarnation, pool, time.time()
        )
        self.current[slot] = worker
        self.workers.append(worker)
        self.note(f"start worker {incarnation} (pid {worker.pid}, {pool})")
        return worker

    def start_workers(self, timeout: float = 90.0) -> None:
        for slot, _, _ in SLOTS:
            self.start_worker(slot)
        deadline = time.monotonic() + timeout
        while not all(w.ready() for w in self.current.values()):
            for worker in self.current.values():
                if not worker.alive():
                    raise AssertionError(
                        f"worker {worker.incarnation} exited with "
                        f"{worker.process.returncode} before it was ready:\n{worker.log()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def watch_workers(self) -> None:
        """Restart a worker that exited without being killed, and note it.

        What is left of its process group is killed first, as a process supervisor
        would (systemd's KillMode=control-group); the steps its processes were inside
        are noted like those of a kill.
        """
        for slot, worker in list(self.current.items()):
            if worker.killed_at is None and not worker.alive():
                worker.killed_at = time.time()
                worker.kill()
                time.sleep(SETTLE)
                inflight = list(self.inflight(worker).values())
                self.evidence.delete(self.ev.inflight(worker.incarnation))
                log = worker.log()
                cause = [line for line in log.splitlines() if "CRITICAL" in line][-1:]
                self.unexpected_exits.append(
                    {
                        "t": worker.killed_at,
                        "incarnation": worker.incarnation,
                        "returncode": worker.process.returncode,
                        "cause": cause[0] if cause else log[-500:],
                        "inflight": inflight,
                    }
                )
                self.note(
                    f"worker {worker.incarnation} EXITED by itself "
                    f"({worker.process.returncode}): {cause}; in flight {inflight}"
                )
                self.start_worker(slot)

    def inflight(self, worker: WorkerProcess) -> dict[int, dict[str, Any]]:
        """pid -> the step run that process is inside, per its marker."""
        raw = self.evidence.hgetall(self.ev.inflight(worker.incarnation))
        return {int(pid): _parse_marker(int(pid), str(value)) for pid, value in raw.items()}

    # -- Faults -------------------------------------------------------------------------

    def kill_worker(self) -> None:
        ready = [w for w in self.current.values() if w.ready()]
        if not ready:
            return
        busy = [w for w in ready if self.inflight(w)]
        worker = self.rng.choice(busy if busy and self.rng.random() < 0.8 else ready)
        children = worker.children() if worker.pool == "prefork" else []
        if children and self.rng.random() < CHILD_KILL_SHARE:
            marked = [pid for pid in self.inflight(worker) if pid in children]
            pid = self.rng.choice(marked or children)
            t = time.time()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: pid not in worker.group(), f"child {pid} to end", 10, 0.01)
            time.sleep(SETTLE)
            marker = self.inflight(worker).get(pid)
            self.evidence.hdel(self.ev.inflight(worker.incarnation), pid)
            record = {
                "t": t, "kind": "child", "incarnation": worker.incarnation, "pids": [pid],
                "inflight": [marker] if marker else [],
            }  # fmt: skip
            self.kills.append(record)
            self.note(f"KILL child {pid} of {worker.incarnation}: in flight {record['inflight']}")
            return
        pids = worker.group()
        t = time.time()
        worker.killed_at = t
        worker.kill()
        time.sleep(SETTLE)
        inflight = list(self.inflight(worker).values())
        self.evidence.delete(self.ev.inflight(worker.incarnation))
        record = {
            "t": t, "kind": "group", "incarnation": worker.incarnation, "pids": pids,
            "inflight": inflight,
        }  # fmt: skip
        self.kills.append(record)
        self.note(f"KILL group {worker.incarnation} {pids}: in flight {inflight}")
        self.start_worker(worker.slot)

    def duplicate(self) -> None:
        """Send again, with the same task id and arguments, an invocation in flight."""
        running = sorted(
            {m["task"] for w in self.current.values() for m in self.inflight(w).values()}
        )
        if not running:
            return
        task_id = self.rng.choice(running)
        try:
            self.send(task_id)
        except Exception as exc:
            self.send_errors.append(f"duplicate {task_id}: {type(exc).__name__}: {exc}")
            return
        self.duplicates.append({"t": time.time(), "task": task_id})
        self.note(f"DUPLICATE {task_id}")

    def restart_redis(self) -> None:
        inflight = [m for w in self.current.values() for m in self.inflight(w).values()]
        t_kill = time.time()
        self.redis.kill()
        down = self.rng.uniform(*REDIS_DOWNTIME)
        self.note(f"REDIS KILLED (down for {down:.2f}s); in flight {inflight}")
        time.sleep(down)
        self.redis.start()
        t_ready = time.time()
        self.restarts.append(
            {"killed": t_kill, "ready": t_ready, "down": t_ready - t_kill, "inflight": inflight}
        )
        self.note(f"REDIS READY after {t_ready - t_kill:.2f}s")

    # -- Sending ------------------------------------------------------------------------

    def send(self, task_id: str) -> None:
        self.app.send_task(
            harness.TASK, args=[self.orders[task_id], harness.STEPS], task_id=task_id
        )

    # -- The run ------------------------------------------------------------------------

    def drive(self) -> None:
        """Send the invocations and inject faults for ``settings.seconds``."""
        s = self.settings
        start = time.monotonic()
        end = start + s.seconds
        for number in range(s.invocations):
            self.orders[self.task_id(number)] = f"order-{number}"
        sending = 0.8 * s.seconds
        submit_at = [start + sending * k / s.invocations for k in range(s.invocations)]
        restart_at = sorted(
            start + (k + self.rng.uniform(0.2, 0.8)) * s.seconds / s.redis_restarts
            for k in range(s.redis_restarts)
        )
        next_kill = start + self.rng.uniform(*KILL_EVERY)
        next_duplicate = start + self.rng.uniform(*DUPLICATE_EVERY)
        pending = list(self.orders)
        self.note(f"drive: {s}")
        while True:
            now = time.monotonic()
            if now >= end and not pending:
                break
            self.watch_workers()
            # Faults before sends: a send and a Redis kill due in the same turn of this
            # loop must not come as "send, then kill a few ms later", a coincidence this
            # loop would make far likelier than random timing does.
            if now < end:
                if restart_at and restart_at[0] <= now:
                    restart_at.pop(0)
                    self.restart_redis()
                    continue
                if next_kill <= now:
                    self.kill_worker()
                    next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY)
                if next_duplicate <= now:
                    self.duplicate()
                    next_duplicate = time.monotonic() + self.rng.uniform(*DUPLICATE_EVERY)
            while pending and submit_at[s.invocations - len(pending)] <= now:
                task_id = pending[0]
                try:
                    self.send(task_id)
                except Exception as exc:
                    self.send_errors.append(f"send {task_id}: {type(exc).__name__}: {exc}")
                    break
                pending.pop(0)
                self.note(f"send {task_id}")
            time.sleep(0.02)
        self.timings["chaos"] = time.monotonic() - start
        self.note("drive: faults stop")

    def states(self) -> dict[str, tuple[str | None, str | None]]:
        """task id -> (journal status, result backend state), read in two round trips."""
        ids = list(self.orders)
        found = runtime_for(self.app).store.read_many(ids)
        metas = self.private.mget([f"celery-task-meta-{task_id}" for task_id in ids])
        return {
            task_id: (
                journal[0].get("status") if journal else None,
                json.loads(meta)["status"] if meta else None,
            )
            for task_id, journal, meta in zip(ids, found, metas, strict=True)
        }

    def unfinished(self) -> dict[str, tuple[str | None, str | None]]:
        return {t: s for t, s in self.states().items() if s != ("completed", "SUCCESS")}

    def drain(self, timeout: float) -> dict[str, tuple[str | None, str | None]]:
        """Wait until every invocation finished (journal and backend); return the rest.

        Gives up early when nothing can change any more: no message queued or held by a
        worker (a deferred or retried delivery waiting for its ETA is held, unacked)
        and no step in flight, for ``STUCK`` seconds.
        """
        start = time.monotonic()
        deadline = start + timeout
        left = self.unfinished()
        idle_since: float | None = None
        while left and time.monotonic() < deadline:
            self.watch_workers()
            time.sleep(0.5)
            left = self.unfinished()
            busy = self.messages_left() or any(self.inflight(w) for w in self.current.values())
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > STUCK:
                self.note(f"drain: nothing queued, held or running for {STUCK:.0f}s")
                break
        self.timings["drain"] = time.monotonic() - start
        # Deferred duplicates may still be queued: let them run out (they return the
        # recorded result), but do not wait long for it.
        quiet = time.monotonic() + 30
        while self.messages_left() and time.monotonic() < quiet and not left:
            time.sleep(0.5)
        self.note(f"drain: {len(left)} unfinished after {self.timings['drain']:.1f}s")
        return left

    def received(self, task_id: str) -> bool:
        """Whether any worker ever logged receiving a message of ``task_id``."""
        mark = f"[{task_id}] received"
        return any(mark in w.log() for w in self.workers)

    def whereabouts(self, task_id: str) -> str:
        """Where the broker and the workers' logs last saw ``task_id``, for a failure."""
        queue = f"{self.prefix}:kombu:{harness.queue_name(self.prefix)}"
        queued = sum(task_id in m for m in self.private.lrange(queue, 0, -1))
        unacked = self.private.hgetall(f"{self.prefix}:kombu:unacked")
        held = sum(task_id in m for m in unacked.values())
        seen = [
            f"{w.incarnation}: {line[:300]}"
            for w in self.workers
            for line in w.log().splitlines()
            if task_id in line
        ]
        sent = [line for line in self.events if task_id in line]
        return f"messages queued {queued}, unacked {held}; driver {sent}; worker logs {seen[:12]}"

    def messages_left(self) -> int:
        queue = f"{self.prefix}:kombu:{harness.queue_name(self.prefix)}"
        unacked = f"{self.prefix}:kombu:unacked"
        return int(self.private.llen(queue)) + int(self.private.hlen(unacked))

    # -- Teardown -----------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive() or worker.group():
                worker.kill()
        self.redis.kill()
        if not os.environ.get("DURABLE_CHAOS_KEEP"):
            keys = list(self.evidence.scan_iter(f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                self.evidence.delete(*keys[start : start + 1000])
        self.evidence.close()
        self.private.close()
        release_runtime(self.app)
        self.app.close()

    def fault_log(self) -> dict[str, list[dict[str, Any]]]:
        """What the driver did, with times in seconds since the run began."""

        def rel(t: float) -> float:
            return round(t - self.t0, 3)

        return {
            "kills": [{**k, "t": rel(k["t"])} for k in self.kills],
            "duplicates": [{**d, "t": rel(d["t"])} for d in self.duplicates],
            "redis_restarts": [
                {**r, "killed": rel(r["killed"]), "ready": rel(r["ready"])} for r in self.restarts
            ],
            "unexpected_worker_exits": [{**x, "t": rel(x["t"])} for x in self.unexpected_exits],
        }

    def logs(self) -> list[tuple[str, str]]:
        sections = [("chaos driver events", "\n".join(self.events))]
        sections += [(f"worker log {w.incarnation}", w.log() or "(empty)") for w in self.workers]
        sections.append(("private redis log", self.redis.log() or "(empty)"))
        return sections


def _parse_marker(pid: int, value: str) -> dict[str, Any]:
    task, index, run, entered = value.split("|")
    return {"task": task, "index": int(index), "run": int(run), "pid": pid, "t": float(entered)}
