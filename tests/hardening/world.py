"""One hardening test's world: its prefix and queue, its client app, its workers."""

from __future__ import annotations

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
from celery_durable.keys import InvocationKeys, KeySpace
from celery_durable.runtime import release_runtime
from tests.hardening import harness
from tests.processes import ROOT, Worker, environment, start_worker, wait_for

WAIT_TIMEOUT = 60.0


@dataclass
class World:
    """A unique prefix and queue, a client app, and the workers the test started.

    ``journal`` is the client of the journal's Redis: the shared one, unless the test
    calls ``use_journal`` with a Redis of its own before it starts a worker.
    """

    prefix: str
    tmp_path: Path
    client: redis.Redis
    journal_url: str = ""
    wait_aof: bool = False
    workers: list[Worker] = field(default_factory=list)
    app: Celery = field(init=False)

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.keys = KeySpace(f"{self.prefix}:durable")
        self.journal = self.client
        self.app = self._make_app()

    def _make_app(self) -> Celery:
        return harness.make_app(
            harness.REDIS_URL, self.prefix, self.queue, self.journal_url, self.wait_aof
        )

    def use_journal(self, url: str, client: redis.Redis, wait_aof: bool = False) -> None:
        """Keep journals at ``url`` (read by the test through ``client``, an admin), with
        ``durable_wait_aof`` as given."""
        release_runtime(self.app)
        self.app.close()
        self.journal_url, self.journal, self.wait_aof = url, client, wait_aof
        self.app = self._make_app()

    # -- Workers ------------------------------------------------------------------------

    def start_worker(
        self, pool: str = "solo", concurrency: int = 1, queues: tuple[str, ...] = (), **extra: str
    ) -> Worker:
        """Start a worker subprocess on ``queues`` (this test's queue by default), with
        ``extra`` in its environment."""
        name = f"{self.queue}-{len(self.workers) + 1}"
        worker = start_worker(
            "tests.hardening.proj", name, queues or (self.queue,), self.tmp_path / f"{name}.log",
            {**self.env(), **extra}, pool, concurrency,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def env(self) -> dict[str, str]:
        """What the worker subprocesses (and the CLI) read their settings from."""
        return {
            harness.ENV_REDIS_URL: harness.REDIS_URL,
            harness.ENV_JOURNAL_URL: self.journal_url,
            harness.ENV_PREFIX: self.prefix,
            harness.ENV_QUEUE: self.queue,
            harness.ENV_WAIT_AOF: "1" if self.wait_aof else "",
        }

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    # -- Invocations ----------------------------------------------------------------------

    def new_id(self) -> str:
        return f"{self.prefix}-{uuid.uuid4().hex[:8]}"

    def send(self, name: str, *args: Any, task_id: str = "", **options: Any) -> AsyncResult:
        return self.app.send_task(
            name, args=list(args), task_id=task_id or self.new_id(), **options
        )

    def invocation_keys(self, task_id: str) -> InvocationKeys:
        return self.keys.invocation(task_id)

    def invocation(self, task_id: str) -> Invocation | None:
        return get_invocation(self.app, task_id)

    def wait_status(
        self, task_id: str, *statuses: str, timeout: float = WAIT_TIMEOUT
    ) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status in statuses else None

        return wait_for(reached, f"{task_id} to be {' or '.join(statuses)}", timeout)

    def resend_for_failure(self, name: str, *args: Any, task_id: str) -> BaseException:
        """Deliver ``task_id`` again and return the exception its delivery stored.

        Read from the backend's key, not through ``AsyncResult.get()``: the app's result
        consumer may still hand back the first delivery's SUCCESS for the same id.
        """
        self.app.AsyncResult(task_id).forget()
        self.send(name, *args, task_id=task_id)

        def failed() -> dict[str, Any] | None:
            meta: dict[str, Any] = self.app.backend.get_task_meta(task_id, cache=False)
            return meta if meta["status"] == "FAILURE" else None

        meta = wait_for(failed, f"the delivery of {task_id} to fail", WAIT_TIMEOUT)
        error: BaseException = self.app.backend.exception_to_python(meta["result"])
        return error

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``celery -A tests.hardening.proj durable ARGS`` as an operator would."""
        command = [sys.executable, "-m", "celery", "-A", "tests.hardening.proj", "durable", *args]
        return subprocess.run(
            command, cwd=ROOT, env=environment(self.env()), capture_output=True, text=True,
            timeout=WAIT_TIMEOUT, check=False,
        )  # fmt: skip

    # -- Teardown -------------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for client in {id(self.client): self.client, id(self.journal): self.journal}.values():
            keys = list(client.scan_iter(f"{self.prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        keys = list(self.client.scan_iter(f"celery-task-meta-{self.prefix}-*", count=1000))
        if keys:
            self.client.delete(*keys)
        release_runtime(self.app)
        self.app.close()
