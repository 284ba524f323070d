"""One cluster test's world: its prefix, queue, client app, worker subprocesses, records.

Modelled on ``tests/system/workers.py``: workers are ``celery worker`` subprocesses of
``tests.cluster.proj``, each the leader of its own process group, SIGKILLed with all its
children at teardown. The journal is on the Redis Cluster; the broker, the results and
the records are on the Redis at 6379.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult

from celery_durable import Invocation, get_invocation
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime, runtime_for
from tests.cluster import names
from tests.cluster.cluster import LocalCluster
from tests.processes import ROOT, Worker, environment, start_worker, wait_for

REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class World:
    """A unique prefix and queue, a client app, and the workers the test started."""

    prefix: str
    tmp_path: Path
    client: redis.Redis
    cluster: LocalCluster
    app: Celery = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.app = names.make_app(REDIS_URL, self.cluster.url, self.prefix, self.queue)
        self.rec = names.Records(self.prefix)
        self.keys = KeySpace(f"{self.prefix}:durable", cluster=True)

    def env(self, visibility_timeout: float = 2.0) -> dict[str, str]:
        """The environment of a worker or a ``celery`` command of this world."""
        return {
            names.ENV_REDIS_URL: REDIS_URL,
            names.ENV_JOURNAL_URL: self.cluster.url,
            names.ENV_PREFIX: self.prefix,
            names.ENV_QUEUE: self.queue,
            names.ENV_VISIBILITY: str(visibility_timeout),
        }

    # -- Workers ------------------------------------------------------------------------

    def start_worker(self, visibility_timeout: float = 2.0, wait: bool = True) -> Worker:
        """Start a one-process (solo) worker on this test's queue."""
        name = f"{self.queue}-{len(self.workers) + 1}"
        log_path = self.tmp_path / f"{name}.log"
        env = self.env(visibility_timeout)
        worker = start_worker("tests.cluster.proj", name, [self.queue], log_path, env, wait=wait)
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int, visibility_timeout: float = 2.0) -> list[Worker]:
        """Start ``count`` workers at once (they start in parallel) and wait for all."""
        started = [self.start_worker(visibility_timeout, wait=False) for _ in range(count)]
        for worker in started:
            worker.wait_ready()
        return started

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    def celery(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``celery -A tests.cluster.proj ARGS`` as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tests.cluster.proj", *args],
            cwd=ROOT,
            env=environment(self.env()),
            capture_output=True,
            text=True,
            timeout=60,
        )

    # -- Tasks --------------------------------------------------------------------------

    def new_id(self, master_port: int | None = None) -> str:
        """A new task id; with ``master_port``, one whose slot that master holds now."""
        while True:
            task_id = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
            slot = self.keys.slot(task_id)
            if master_port is None or self.cluster.master_of_slot(slot).port == master_port:
                self.task_ids.add(task_id)
                return task_id

    def send(self, name: str, *args: Any, task_id: str = "", **options: Any) -> AsyncResult:
        task_id = task_id or self.new_id()
        self.task_ids.add(task_id)
        return self.app.send_task(name, args=list(args), task_id=task_id, **options)

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app)

    def invocation(self, task_id: str) -> Invocation:
        found = get_invocation(self.app, task_id)
        assert found is not None, f"no journal for {task_id}"
        return found

    def store_client(self) -> Any:
        """The cluster client of the journal store the test's app uses."""
        return runtime_for(self.app).store.client

    def wait_status(self, task_id: str, status: str) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status == status else None

        return wait_for(reached, f"{task_id} to be {status}")

    # -- Records ------------------------------------------------------------------------

    def block(self, task_id: str, step: str) -> None:
        """Make the next run of ``step`` wait until ``release`` (or the worker's death)."""
        self.client.set(self.rec.block(task_id, step), 1)

    def release(self, task_id: str, step: str) -> None:
        self.client.rpush(self.rec.release(task_id, step), 1)

    def runs(self, task_id: str, *steps: str) -> dict[str, int]:
        values = self.client.mget([self.rec.runs(task_id, step) for step in steps])
        return {step: int(v or 0) for step, v in zip(steps, values, strict=True)}

    def pids(self, task_id: str, step: str) -> list[int]:
        return [int(p) for p in self.client.lrange(self.rec.pids(task_id, step), 0, -1)]

    def wait_entered(self, task_id: str, step: str, times: int = 1) -> int:
        """Wait until ``step`` started ``times`` times; return the pid of that run."""

        def started() -> list[int] | None:
            pids = self.pids(task_id, step)
            return pids if len(pids) >= times else None

        found = wait_for(started, f"{step} of {task_id} to start {times} time(s)")
        return found[times - 1]

    def bodies(self, task_id: str) -> list[float]:
        return [float(t) for t in self.client.lrange(self.rec.bodies(task_id), 0, -1)]

    def counter(self, key: str) -> int:
        return int(self.client.get(key) or 0)

    def outcomes(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(o) for o in self.client.lrange(self.rec.outcomes(task_id), 0, -1)]

    def wait_outcomes(self, task_id: str, count: int) -> list[dict[str, Any]]:
        def ended() -> list[dict[str, Any]] | None:
            found = self.outcomes(task_id)
            return found if len(found) >= count else None

        return wait_for(ended, f"{count} deliveries of {task_id} to end")

    def unacked(self) -> int:
        return int(self.client.hlen(f"{self.prefix}:kombu:unacked"))

    def queued(self) -> int:
        return int(self.client.llen(f"{self.prefix}:kombu:{self.queue}"))

    def wait_settled(self) -> None:
        wait_for(
            lambda: self.queued() == 0 and self.unacked() == 0,
            "every message of the test's queue to be acked",
        )

    # -- Teardown -----------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        keys += [f"celery-task-meta-{task_id}" for task_id in self.task_ids]
        if keys:
            self.client.delete(*keys)
        self.cluster.delete_prefix(self.prefix)
        release_runtime(self.app)  # closes the journal's sockets (test_cluster_clients.py)
        self.app.close()
