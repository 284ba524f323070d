"""Worker subprocesses of a system test, and the test's view of Redis and the journal."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from amqp.exceptions import NotFound
from celery import Celery
from celery.result import AsyncResult

from celery_durable import Invocation, get_invocation
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.store import StartRequest
from celery_durable.keys import InvocationKeys, KeySpace
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.wakeups import encode_call
from tests.processes import Worker, start_worker, wait_for
from tests.system import harness

REDIS_URL = os.environ.get(harness.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")

#: Run a test once on the Redis broker and once on RabbitMQ (its ``system`` fixture).
BOTH_BROKERS = pytest.mark.parametrize("system", [harness.REDIS, harness.AMQP], indirect=True)

#: What a delivery that found the invocation's lease held by another execution says
#: when it defers itself (a Celery retry): it ran neither the body nor a step.
DEFERRED = "holds the invocation; deferred"


def is_deferral(outcome: dict[str, Any]) -> bool:
    """Whether a recorded outcome is a delivery that deferred itself to a live lease."""
    return outcome["state"] == "RETRY" and DEFERRED in outcome.get("message", "")


@dataclass
class System:
    """One test's world: its key prefix, queue, client app, records and workers.

    ``broker`` is ``harness.REDIS`` or ``harness.AMQP`` (RabbitMQ); Redis keeps the
    results, the journals and the records either way.
    """

    prefix: str
    tmp_path: Path
    client: redis.Redis
    broker: str = harness.REDIS
    app: Celery = field(init=False)
    rec: harness.Records = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.app = harness.make_app(REDIS_URL, self.prefix, self.queue, broker=self.broker)
        self.rec = harness.Records(self.prefix)
        self.keys = KeySpace(f"{self.prefix}:durable")

    # -- Workers ------------------------------------------------------------------------

    def start_worker(
        self,
        pool: str = "solo",
        visibility_timeout: float = 2.0,
        retry_delay: float = 0.0,
        max_retries: int = 4,
        rename: str = "",
        recovery_after: float | None = 60.0,
    ) -> Worker:
        """Start a worker subprocess on this test's queue and wait until it is ready.

        Args:
            pool: ``solo`` runs tasks in the worker process; ``prefork`` in one child.
            visibility_timeout: Seconds after which this worker redelivers a message
                that a dead worker took and never acked (Redis broker only).
            retry_delay: The task's ``default_retry_delay``: after a worker died inside
                a step, the next execution retries it after this delay (0: at once).
            max_retries: The task's ``max_retries``; its steps get one more attempt.
            rename: ``old=new``: the task asks for step ``new`` where it asked for ``old``.
            recovery_after: The worker's ``durable_recovery_after`` (None: off).
        """
        name = f"{self.queue}-{len(self.workers) + 1}"
        environ = {
            harness.ENV_REDIS_URL: REDIS_URL,
            harness.ENV_PREFIX: self.prefix,
            harness.ENV_QUEUE: self.queue,
            harness.ENV_VISIBILITY: str(visibility_timeout),
            harness.ENV_RETRY_DELAY: str(retry_delay),
            harness.ENV_MAX_RETRIES: str(max_retries),
            harness.ENV_RENAME: rename,
            harness.ENV_BROKER: self.broker,
            harness.ENV_RECOVERY_AFTER: "none" if recovery_after is None else str(recovery_after),
        }
        log_path = self.tmp_path / f"{name}.log"
        worker = start_worker("tests.system.proj", name, [self.queue], log_path, environ, pool)
        self.workers.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    def worker_logs(self) -> list[tuple[str, str]]:
        return [(worker.name, worker.log()) for worker in self.workers]

    # -- Tasks --------------------------------------------------------------------------

    def new_task_id(self) -> str:
        task_id = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.task_ids.add(task_id)
        return task_id

    def send(self, task_id: str, order: str, n_steps: int, **options: Any) -> AsyncResult:
        """Send the pipeline task with a chosen task id, as a client would."""
        self.task_ids.add(task_id)
        return self.app.send_task(
            harness.PIPELINE, args=[order, n_steps], task_id=task_id, **options
        )

    def send_named(self, name: str, task_id: str, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send task ``name`` of ``proj`` with a chosen task id and arguments."""
        self.task_ids.add(task_id)
        return self.app.send_task(name, args=list(args), kwargs=kwargs, task_id=task_id)

    def send_with(
        self,
        name: str,
        task_id: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send task ``name`` with Celery execution options (``time_limit``, ...)."""
        self.task_ids.add(task_id)
        return self.app.send_task(
            name, args=list(args), kwargs=kwargs or {}, task_id=task_id, **options
        )

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Revoke ``task_id`` through the workers' remote control, as ``celery revoke``."""
        self.app.control.revoke(task_id, terminate=terminate)

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.app)

    def invocation(self, task_id: str) -> Invocation:
        found = get_invocation(self.app, task_id)
        assert found is not None, f"no journal for {task_id}"
        return found

    # -- Records ------------------------------------------------------------------------

    def block(self, task_id: str, step: str) -> None:
        """Make the next run of ``step`` wait (until the worker is killed or ``release``)."""
        self.client.set(self.rec.block(task_id, step), 1)

    def release(self, task_id: str, step: str, run: int) -> None:
        """Let run number ``run`` of ``step``, blocked by ``block``, go on."""
        self.client.rpush(self.rec.release(task_id, step, run), 1)

    def hold_after(self, task_id: str) -> None:
        """Make the next delivery wait after it finished, before its late ack."""
        self.client.set(self.rec.hold_after(task_id), 1)

    def release_hold(self, task_id: str) -> None:
        """Let a delivery held by ``hold_after`` go on to its ack."""
        self.client.rpush(self.rec.hold_release(task_id), 1)

    def runs(self, task_id: str, *steps: str) -> dict[str, int]:
        values = self.client.mget([self.rec.runs(task_id, step) for step in steps])
        return {step: int(v or 0) for step, v in zip(steps, values, strict=True)}

    def pids(self, task_id: str, step: str) -> list[int]:
        return [int(p) for p in self._strings(self.rec.pids(task_id, step))]

    def wait_entered(self, task_id: str, step: str, times: int = 1) -> int:
        """Wait until ``step`` started ``times`` times; return the pid of that run."""

        def started() -> list[int] | None:
            pids = self.pids(task_id, step)
            return pids if len(pids) >= times else None

        return wait_for(started, f"{step} of {task_id} to start {times} time(s)")[times - 1]

    def counter(self, key: str) -> int:
        return int(self.client.get(key) or 0)

    def executions(self, task_id: str) -> list[list[str]]:
        """The random values each execution drew, execution by execution."""
        count = self.counter(self.rec.bodies(task_id))
        return [self._strings(self.rec.draws(task_id, n)) for n in range(1, count + 1)]

    def outcomes(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(o) for o in self._strings(self.rec.outcomes(task_id))]

    def wait_outcomes(self, task_id: str, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` deliveries of ``task_id`` ended; return their outcomes."""

        def ended() -> list[dict[str, Any]] | None:
            outcomes = self.outcomes(task_id)
            return outcomes if len(outcomes) >= count else None

        return wait_for(ended, f"{count} deliveries of {task_id} to end")

    def wait_executions_ended(self, task_id: str, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` deliveries that were not deferrals ended; return those."""

        def ended() -> list[dict[str, Any]] | None:
            outcomes = [o for o in self.outcomes(task_id) if not is_deferral(o)]
            return outcomes if len(outcomes) >= count else None

        return wait_for(ended, f"{count} non-deferred deliveries of {task_id} to end")

    def receipts(self, task_id: str) -> list[dict[str, Any]]:
        """Each message of ``task_id`` a worker received: its pid and ETA, in order."""
        return [json.loads(o) for o in self._strings(self.rec.receipts(task_id))]

    def caught(self, task_id: str) -> list[dict[str, Any]]:
        """Each TerminalError the body of ``task_id`` caught, in order."""
        return [json.loads(o) for o in self._strings(self.rec.caught(task_id))]

    def unacked(self) -> int:
        """Messages of this test's queue that a worker took and has not acked yet.

        Redis broker only: RabbitMQ does not tell a client that does not hold them.
        """
        assert self.broker == harness.REDIS, "unacked messages are only seen on Redis"
        return int(self.client.hlen(f"{self.prefix}:kombu:unacked"))

    def queued(self) -> int:
        """Messages waiting in this test's queue (ready, not taken by a worker)."""
        if self.broker == harness.AMQP:
            return self._amqp_queue_declare()[1]
        return int(self.client.llen(f"{self.prefix}:kombu:{self.queue}"))

    def wait_redelivery_pending(self) -> None:
        """Wait until a killed worker's message is where the broker gives it back from:
        the unacked hash (Redis, after the visibility timeout) or the queue (RabbitMQ,
        once it saw the connection close)."""
        if self.broker == harness.AMQP:
            wait_for(lambda: self.queued() == 1, "RabbitMQ to requeue the killed worker's message")
        else:
            assert self.unacked() == 1, "the killed worker's message waits, unacked"

    def wait_settled(self) -> None:
        """Wait until no message of this test's queue is waiting or held by a worker."""
        if self.broker == harness.AMQP:
            # RabbitMQ tells a client how many messages are ready, not how many a
            # consumer holds unacked: the caller checks those through the outcomes.
            wait_for(lambda: self.queued() == 0, "the queue to be empty")
        else:
            wait_for(
                lambda: self.queued() == 0 and self.unacked() == 0,
                "every message of the test's queue to be acked",
            )

    def lose_messages(self) -> None:
        """Delete every message of this test's queue, as a broker that lost them would:
        those waiting, and those a dead worker took and never acked."""
        if self.broker == harness.AMQP:
            with self.app.connection_for_write() as conn:
                conn.default_channel.queue_purge(self.queue)
        else:
            base = f"{self.prefix}:kombu:"
            self.client.delete(base + self.queue, base + "unacked", base + "unacked_index")

    def start_lost(self, task_id: str, order: str, n_steps: int) -> None:
        """Leave ``task_id`` as a worker that died in it, and whose message the broker
        lost, would: running, its lease run out, its call stored (made as a worker makes
        it), and no message anywhere."""
        args = (order, n_steps)
        call = encode_call(harness.PIPELINE, args, {}, {"task_id": task_id, "queue": self.queue})
        request = StartRequest(
            harness.PIPELINE, fingerprint(args, {}), 7, 0.05, "gone:1", call=call
        )
        self.task_ids.add(task_id)
        assert runtime_for(self.app).store.start(task_id, request).state == "run"

    def _amqp_queue_declare(self) -> tuple[str, int, int]:
        """(name, ready messages, consumers) of this test's RabbitMQ queue."""
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            try:
                declared = channel.queue_declare(self.queue, passive=True)
            except NotFound:  # no worker declared it yet
                return self.queue, 0, 0
            return declared.queue, declared.message_count, declared.consumer_count

    # -- The journal's own keys ---------------------------------------------------------

    def journal_keys(self, task_id: str) -> InvocationKeys:
        return self.keys.invocation(task_id)

    def meta(self, task_id: str) -> dict[str, str]:
        """The invocation's meta hash as stored (fence, lease, deaths, ...)."""
        return dict(self.client.hgetall(self.journal_keys(task_id).meta))

    def pttls(self, task_id: str) -> tuple[int, int]:
        """Milliseconds the meta hash and the journal list of ``task_id`` have left
        (-1: no expiry, -2: no such key); the journal's is its packed steps' once a
        completed invocation's journal was packed (``InvocationKeys.steps``)."""
        keys = self.journal_keys(task_id)
        journal = int(self.client.pttl(keys.journal))
        if journal == -2:
            journal = int(self.client.pttl(keys.steps))
        return int(self.client.pttl(keys.meta)), journal

    def expire_lease(self, task_id: str) -> None:
        """Expire the lease of ``task_id`` by hand, as if its holder stopped renewing it."""
        self.client.hset(self.journal_keys(task_id).meta, "lease_until", 0)

    def _strings(self, key: str) -> list[str]:
        return [str(item) for item in self.client.lrange(key, 0, -1)]

    # -- Teardown -----------------------------------------------------------------------

    def close(self) -> None:
        self.kill_all()
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        keys += [f"celery-task-meta-{task_id}" for task_id in self.task_ids]
        self.client.delete(*keys)
        if self.broker == harness.AMQP:
            self._delete_amqp_queue()
        release_runtime(self.app)
        self.app.close()

    def _delete_amqp_queue(self) -> None:
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.queue)
