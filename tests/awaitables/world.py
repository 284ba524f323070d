"""One awaitables test's world: its prefix, queues, worker subprocesses and records.

Self-contained on purpose (modelled on ``tests/system``, which others are changing):
workers are ``celery worker`` subprocesses of ``tests.awaitables.proj``, each the
leader of its own process group, SIGKILLed with all its children.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from amqp.exceptions import NotFound
from celery import Celery
from celery.result import AsyncResult

from celery_durable import Invocation, get_invocation
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime
from tests.awaitables import names
from tests.processes import Worker, start_worker, wait_for

REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT_TIMEOUT = 30.0


@dataclass
class World:
    """A unique prefix and queues, a client app, and the workers the test started."""

    prefix: str
    tmp_path: Path
    client: redis.Redis
    broker: str = names.REDIS
    split: bool = False
    journal_url: str = ""
    app: Celery = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.children = names.children_queue(self.queue)
        self.app = names.make_app(
            REDIS_URL, self.prefix, self.queue, self.broker, self.journal_url, self.split
        )
        self.rec = names.Records(self.prefix)
        self.keys = KeySpace(f"{self.prefix}:durable")

    # -- Workers ------------------------------------------------------------------------

    def start_worker(
        self, queues: tuple[str, ...] = (), wait: bool = True, pool: str = "", **env: str
    ) -> Worker:
        """Start a one-process worker on ``queues`` (default: both queues).

        The pool is ``solo`` on the Redis broker. On RabbitMQ it is ``threads`` with one
        thread unless asked: Celery 5.7's solo pool on py-amqp stalls now and then for
        up to ~10 s before taking a message that is already in the queue (seen with
        plain Celery tasks too, not with the threads or prefork pools).
        """
        pool = pool or ("threads" if self.broker == names.AMQP else "solo")
        name = f"{self.queue}-{len(self.workers) + 1}"
        environ = {
            names.ENV_REDIS_URL: REDIS_URL,
            names.ENV_JOURNAL_URL: self.journal_url,
            names.ENV_PREFIX: self.prefix,
            names.ENV_QUEUE: self.queue,
            names.ENV_BROKER: self.broker,
            names.ENV_SPLIT: "1" if self.split else "",
            **env,
        }
        worker = start_worker(
            "tests.awaitables.proj",
            name,
            queues or (self.queue, self.children),
            self.tmp_path / f"{name}.log",
            environ,
            pool,
            wait=wait,
        )
        self.workers.append(worker)
        return worker

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    # -- Tasks --------------------------------------------------------------------------

    def new_id(self) -> str:
        task_id = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.task_ids.add(task_id)
        return task_id

    def send(self, name: str, *args: Any, task_id: str = "", **options: Any) -> AsyncResult:
        """Send task ``name`` to the parents' queue, as a client would."""
        task_id = task_id or self.new_id()
        self.task_ids.add(task_id)
        return self.app.send_task(name, args=list(args), task_id=task_id, **options)

    def invocation(self, task_id: str) -> Invocation:
        found = get_invocation(self.app, task_id)
        assert found is not None, f"no journal for {task_id}"
        return found

    def wait_status(self, task_id: str, status: str, timeout: float = WAIT_TIMEOUT) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status == status else None

        return wait_for(reached, f"{task_id} to be {status}", timeout)

    def wait_suspended_on(self, task_id: str, *awaited: str) -> Invocation:
        """Wait until ``task_id`` is suspended, awaiting exactly the named operations."""

        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            if inv is None or inv.status != "suspended":
                return None
            return inv if sorted(a["name"] for a in inv.awaiting) == sorted(awaited) else None

        return wait_for(reached, f"{task_id} to be suspended on {awaited}")

    # -- Records ------------------------------------------------------------------------

    def runs(self, task_id: str, *steps: str) -> dict[str, int]:
        values = self.client.mget([self.rec.runs(task_id, s) for s in steps])
        return {s: int(v or 0) for s, v in zip(steps, values, strict=True)}

    def spans(self, task_id: str, step: str) -> list[tuple[float, float]]:
        found = self.client.lrange(self.rec.spans(task_id, step), 0, -1)
        return [(float(a), float(b)) for a, b in map(json.loads, found)]

    def bodies(self, task_id: str) -> list[float]:
        """When each execution of the body started."""
        return [float(t) for t in self.client.lrange(self.rec.bodies(task_id), 0, -1)]

    def branches(self, task_id: str) -> list[int]:
        return [int(b) for b in self.client.lrange(self.rec.branches(task_id), 0, -1)]

    def receipts(self, task_id: str) -> int:
        return int(self.client.llen(self.rec.receipts(task_id)))

    def awakeable_id(self, task_id: str, name: str) -> str:
        def handed_out() -> str | None:
            found: str | None = self.client.hget(self.rec.awakeables(task_id), name)
            return found

        return wait_for(handed_out, f"the awakeable {name!r} of {task_id}")

    def block(self, task_id: str, step: str) -> None:
        """Make the next run of ``step`` wait until the worker is killed."""
        self.client.set(self.rec.block(task_id, step), 1)

    def hold_publish(self, task_id: str) -> None:
        """Make the publisher of ``task_id``'s next message wait once the broker has it."""
        self.client.set(self.rec.hold_publish(task_id), 1)

    def wait_entered(self, task_id: str, what: str) -> int:
        """Wait until a blocked ``what`` (a step, or ``publish``) waits; return its pid."""
        key = self.rec.entered(task_id, what)
        return int(wait_for(lambda: self.client.lindex(key, 0), f"{what} of {task_id} to block"))

    def dead_claimers(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.client.lrange(self.rec.dead_claimers(), 0, -1)]

    def wakeup_score(self, task_id: str) -> float | None:
        """When the wake-up of ``task_id`` is due or claimed until (ms), if one is kept."""
        score: float | None = self.client.zscore(self.keys.wakeups, task_id)
        return score

    # -- Brokers ------------------------------------------------------------------------

    def queued(self, queue: str) -> int:
        """Messages waiting in ``queue``, not taken by any worker."""
        if self.broker == names.AMQP:
            with self.app.connection_for_write() as conn:
                try:
                    declared = conn.default_channel.queue_declare(queue, passive=True)
                except NotFound:
                    return 0
                return int(declared.message_count)
        return int(self.client.llen(f"{self.prefix}:kombu:{queue}"))

    def unacked(self) -> int:
        """Messages a worker took and did not ack (Redis broker only)."""
        assert self.broker == names.REDIS
        return int(self.client.hlen(f"{self.prefix}:kombu:unacked"))

    # -- Teardown -----------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        # Parents' results, and their children's (``<parent id>/<index>``).
        keys += list(self.client.scan_iter(f"celery-task-meta-{self.prefix}-*", count=1000))
        if keys:
            self.client.delete(*keys)
        if self.broker == names.AMQP:
            with self.app.connection_for_write() as conn:
                channel = conn.default_channel
                for queue in (self.queue, self.children):
                    channel.queue_delete(queue)
                    channel.exchange_delete(queue)
        release_runtime(self.app)
        self.app.close()
