"""One outage test's world: worker subprocesses on a shared Redis, records in the main one."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult

from celery_durable import Invocation, get_invocation
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime
from tests.conftest import REDIS_URL
from tests.outage import names
from tests.processes import Worker, start_worker, wait_for


@dataclass
class World:
    """A test's prefix and queue, its client app on the shared Redis, its records in the
    main Redis, and its workers (killed, with their process groups, at teardown)."""

    prefix: str
    tmp_path: Path
    shared_url: str
    records: redis.Redis
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue = names.queue_of(self.prefix)
        self.keys = names.Keys(self.prefix)
        self.app: Celery = names.make_app(self.shared_url, self.prefix)
        self.shared = redis.Redis.from_url(self.shared_url, decode_responses=True)

    # -- Workers ------------------------------------------------------------------------

    def start_worker(
        self, pool: str = "solo", visibility_timeout: float = 60.0, concurrency: int = 1
    ) -> Worker:
        name = f"{self.queue}-{len(self.workers) + 1}"
        environ = {
            names.ENV_SHARED_URL: self.shared_url,
            names.ENV_RECORDS_URL: REDIS_URL,
            names.ENV_PREFIX: self.prefix,
            names.ENV_VISIBILITY: str(visibility_timeout),
        }
        log_path = self.tmp_path / f"{name}.log"
        worker = start_worker(
            "tests.outage.proj", name, [self.queue], log_path, environ, pool, concurrency
        )
        self.workers.append(worker)
        return worker

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    def wait_log(self, worker: Worker, text: str, count: int = 1, timeout: float = 60) -> None:
        """Wait until ``text`` appears ``count`` times in the worker's log."""
        wait_for(
            lambda: worker.log().count(text) >= count,
            f"{count} x {text!r} in the log of {worker.name}",
            timeout,
        )

    def log_count(self, worker: Worker, text: str) -> int:
        return worker.log().count(text)

    # -- Tasks --------------------------------------------------------------------------

    def send(self, name: str, task_id: str, *args: Any) -> AsyncResult:
        return self.app.send_task(name, args=list(args), task_id=task_id)

    def new_task_id(self) -> str:
        return f"{self.prefix}-{os.urandom(4).hex()}"

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app)

    def invocation(self, task_id: str) -> Invocation:
        found = get_invocation(self.app, task_id)
        assert found is not None, f"no journal for {task_id}"
        return found

    def meta(self, task_id: str) -> dict[str, str]:
        """The invocation's raw meta hash (deaths, fence, lease) in the shared Redis."""
        meta = KeySpace(f"{self.prefix}:durable").invocation(task_id).meta
        found = self.shared.hgetall(meta)
        return {str(k): str(v) for k, v in found.items()}

    # -- Records ------------------------------------------------------------------------

    def block(self, task_id: str, step: str) -> None:
        self.records.set(self.keys.block(task_id, step), 1)

    def release(self, task_id: str, step: str) -> None:
        self.records.rpush(self.keys.release(task_id, step), 1)

    def wait_entered(self, task_id: str, step: str, times: int = 1) -> None:
        key = self.keys.entered(task_id, step)
        wait_for(lambda: self.records.llen(key) >= times, f"{step} of {task_id} to start")

    def runs(self, task_id: str, *steps: str) -> dict[str, int]:
        values = self.records.mget([self.keys.runs(task_id, step) for step in steps])
        return {step: int(v or 0) for step, v in zip(steps, values, strict=True)}

    def refuse_on_publish(self, task_id: str) -> None:
        self.records.set(self.keys.refuse_on_publish(task_id), 1)

    def refused(self, task_id: str) -> int:
        return int(self.records.llen(self.keys.refused(task_id)))

    def outcomes(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(o) for o in self.records.lrange(self.keys.outcomes(task_id), 0, -1)]

    def wait_outcome(self, task_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((o for o in self.outcomes(task_id) if o["state"] == state), None)

        return wait_for(found, f"a delivery of {task_id} to end {state}", timeout)

    def receipts(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(o) for o in self.records.lrange(self.keys.receipts(task_id), 0, -1)]

    # -- Broker -------------------------------------------------------------------------

    def unacked(self) -> int:
        return int(self.shared.hlen(f"{self.prefix}:kombu:unacked"))

    def queued(self) -> int:
        return int(self.shared.llen(f"{self.prefix}:kombu:{self.queue}"))

    # -- Teardown -----------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        found = list(self.records.scan_iter(f"{self.prefix}:*", count=1000))
        if found:
            self.records.delete(*found)
        self.shared.close()
        release_runtime(self.app)
        self.app.close()
