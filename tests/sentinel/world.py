"""One Sentinel test's world: the system tests' world with its journal behind a sentinel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult

from celery_durable import Invocation, get_invocation
from celery_durable.runtime import release_runtime
from tests.processes import RedisServer, Worker, start_worker, wait_for
from tests.sentinel import names
from tests.sentinel.servers import MASTER_NAME, SentinelTrio, client_of
from tests.system import harness
from tests.system.workers import REDIS_URL, System


@dataclass
class SentinelWorld:
    """Workers whose journal is ``sentinel://`` (broker and backend on the main Redis)."""

    system: System
    trio: SentinelTrio

    def __post_init__(self) -> None:
        self.keys = names.Keys(self.system.prefix)
        # The test's own app reads journals where the workers write them.
        release_runtime(self.system.app)
        self.system.app.conf.update(
            durable_redis_url=self.trio.url,
            durable_redis_options={"master_name": MASTER_NAME},
        )

    def start_worker(
        self,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        pool: str = "solo",
        visibility_timeout: float = 2.0,
    ) -> Worker:
        """Start a worker (one process: ``solo``, or ``prefork`` with one child) on the
        test's queue, its journal behind the sentinel.

        Args:
            wait_replicas: ``durable_wait_replicas``.
            wait_timeout: ``durable_wait_timeout``.
            pool: ``solo``, or ``prefork``, whose parent requeues the message of a child
                that died at once.
            visibility_timeout: Seconds after which the Redis broker delivers again a
                message a worker took and has not acknowledged (a running one too).
        """
        system = self.system
        name = f"{system.queue}-{len(system.workers) + 1}"
        environ = {
            harness.ENV_REDIS_URL: REDIS_URL,
            harness.ENV_PREFIX: system.prefix,
            harness.ENV_QUEUE: system.queue,
            harness.ENV_VISIBILITY: str(visibility_timeout),
            names.ENV_SENTINEL_URL: self.trio.url,
            names.ENV_MASTER_NAME: MASTER_NAME,
            names.ENV_WAIT_REPLICAS: str(wait_replicas),
            names.ENV_WAIT_TIMEOUT: str(wait_timeout),
        }
        log_path = system.tmp_path / f"{name}.log"
        worker = start_worker("tests.sentinel.proj", name, [system.queue], log_path, environ, pool)
        system.workers.append(worker)
        return worker

    def send(self, task_id: str, n_steps: int) -> AsyncResult:
        """Send the task of ``n_steps`` steps under ``task_id``."""
        return self.system.send_named(names.STEPS, task_id, f"order-{task_id}", n_steps)

    # -- What happened ------------------------------------------------------------------

    def runs(self, task_id: str) -> dict[int, int]:
        """How many times each step's function started, by step index."""
        counts: dict[int, int] = {}
        for run in self._records(self.keys.runs(task_id)):
            counts[run["step"]] = counts.get(run["step"], 0) + 1
        return counts

    def reported(self, task_id: str) -> list[dict[str, Any]]:
        """Each value ``ctx.run`` handed to the body: step index, token, execution."""
        return self._records(self.keys.reported(task_id))

    def executions(self, task_id: str) -> int:
        return self.system.counter(self.keys.executions(task_id))

    def invocation(self, task_id: str) -> Invocation:
        """The invocation as the primary the sentinel names now holds it."""
        found = get_invocation(self.system.app, task_id)
        assert found is not None, f"no journal for {task_id} on the primary"
        return found

    def wait_journal_on_primary(self, task_id: str) -> None:
        """Wait until ``task_id``'s invocation exists on the primary the sentinel names;
        fail at once if it was written to the main Redis (the broker's) instead."""
        meta = self.system.journal_keys(task_id).meta

        def created() -> bool:
            if self.system.client.exists(meta):
                raise AssertionError(
                    f"the journal of {task_id} was written to the Redis at {REDIS_URL}, not "
                    f"to the primary the sentinel names (port {self.trio.master_port()}): "
                    "see test_sentinel_store.py"
                )
            with client_of(self.trio.primary) as primary:
                return bool(primary.exists(meta))

        wait_for(created, f"the journal of {task_id} on the sentinel's primary", 30)

    def journal_length(self, server: RedisServer, task_id: str) -> int:
        """Entries of ``task_id``'s journal on ``server`` itself."""
        with client_of(server) as client:
            return int(client.llen(self.system.journal_keys(task_id).journal))

    def logs(self) -> list[tuple[str, str]]:
        """Every worker's log and every server's log, for the report of a failed test."""
        return [*self.system.worker_logs(), *self.trio.logs()]

    def _records(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.system.client.lrange(key, 0, -1)]
