"""One flow-control test's world: its prefix, queue, worker subprocesses and records."""

from __future__ import annotations

import json
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
from celery_durable.runtime import release_runtime
from tests.flow import names
from tests.processes import ROOT, Worker, environment, start_worker, wait_for

WAIT_TIMEOUT = 30.0


@dataclass
class World:
    prefix: str
    tmp_path: Path
    client: redis.Redis
    app: Celery = field(init=False)
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.app = names.make_app(self.prefix, self.queue)
        self.rec = names.Records(self.prefix)

    @property
    def env(self) -> dict[str, str]:
        return {names.ENV_PREFIX: self.prefix, names.ENV_QUEUE: self.queue}

    def start_worker(
        self, pool: str = "solo", concurrency: int = 1, queues: tuple[str, ...] = (), **env: str
    ) -> Worker:
        name = f"{self.queue}-{len(self.workers) + 1}"
        worker = start_worker(
            "tests.flow.proj", name, queues or (self.queue,), self.tmp_path / f"{name}.log",
            {**self.env, **env}, pool, concurrency,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    def new_id(self) -> str:
        return f"{self.prefix}-{uuid.uuid4().hex[:8]}"

    def send(self, name: str, *args: Any, queue: str = "", task_id: str = "") -> AsyncResult:
        return self.app.send_task(
            name, args=list(args), task_id=task_id or self.new_id(), queue=queue or None
        )

    def block(self, task_id: str) -> None:
        """Make the next run of ``task_id``'s blocking step wait until its worker is killed."""
        self.client.set(self.rec.block(task_id), 1)

    def invocation(self, task_id: str) -> Invocation:
        found = get_invocation(self.app, task_id)
        assert found is not None, f"no journal for {task_id}"
        return found

    def wait_status(self, task_id: str, status: str, timeout: float = WAIT_TIMEOUT) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status == status else None

        return wait_for(reached, f"{task_id} to be {status}", timeout)

    def runs(self, task_id: str, *steps: str) -> dict[str, int]:
        values = self.client.mget([self.rec.runs(task_id, s) for s in steps])
        return {s: int(v or 0) for s, v in zip(steps, values, strict=True)}

    def spans(self, key: str) -> list[tuple[str, str, float, float]]:
        return [tuple(json.loads(s)) for s in self.client.lrange(self.rec.spans(key), 0, -1)]  # type: ignore[misc]

    def wait_entered(self, task_id: str, step: str) -> int:
        key = self.rec.entered(task_id, step)
        return int(wait_for(lambda: self.client.lindex(key, 0), f"{step} of {task_id}"))

    def died(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.client.lrange(self.rec.died(), 0, -1)]

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """``celery -A tests.flow.proj durable ...``, as an operator runs it."""
        command = [sys.executable, "-m", "celery", "-A", "tests.flow.proj", "durable", *arguments]
        return subprocess.run(
            command, cwd=ROOT, env=environment(self.env), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        keys += list(self.client.scan_iter(f"celery-task-meta-{self.prefix}-*", count=1000))
        if keys:
            self.client.delete(*keys)
        release_runtime(self.app)
        self.app.close()
