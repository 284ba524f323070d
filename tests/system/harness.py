"""What the test process and the worker subprocesses share: the app factory and key names.

The worker subprocesses import ``tests.system.proj``, which builds its app with
``make_app`` from environment variables. The test process builds a client app with the
same function, so both agree on the broker, the broker key prefix, the queue and the
journal prefix.

The broker is Redis (the default) or RabbitMQ; Redis is always the result backend and
the journal's store.

Everything a worker does that a test wants to check is recorded in Redis under
``<prefix>:rec:``, outside the journal, by the step functions and by task signals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery
from kombu import Exchange, Queue

PIPELINE = "system.pipeline"
#: Steps whose first attempt fails, retried after ``proj.FLAKY_COUNTDOWN`` seconds.
FLAKY = "system.flaky"
#: A step that SIGKILLs its own process on every attempt (prefork pool only).
CRASH_LOOP = "system.crash_loop"
#: An at-most-once step, whose interruption the task catches and compensates.
AT_MOST_ONCE = "system.at_most_once"
#: Three steps, the middle one slow; records how many bodies run at once.
OVERLAP = "system.overlap"
#: A body that SIGKILLs its own process after its last step (or with no step at all).
DIE_OUTSIDE_STEPS = "system.die_outside_steps"
#: Celery's retry idiom: a step's first attempt fails, the body catches it and retries.
RETRY_IDIOM = "system.retry_idiom"
#: A step, then a durable sleep (the invocation suspends), then another step.
SLEEPER = "system.sleeper"

#: Brokers a system test can run on. Redis is the result backend and journal either way.
REDIS, AMQP = "redis", "amqp"
AMQP_URL = os.environ.get("DURABLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: A RabbitMQ queue nobody consumed for this long is deleted by the broker itself, in
#: case a test process died before its teardown deleted it.
AMQP_QUEUE_EXPIRES_MS = 600_000

# Environment variables the worker subprocesses read.
ENV_REDIS_URL = "DURABLE_TEST_REDIS_URL"
ENV_PREFIX = "DURABLE_TEST_PREFIX"
ENV_QUEUE = "DURABLE_TEST_QUEUE"
ENV_VISIBILITY = "DURABLE_TEST_VISIBILITY"
ENV_RENAME = "DURABLE_TEST_RENAME"
ENV_MAX_RETRIES = "DURABLE_TEST_MAX_RETRIES"
ENV_RETRY_DELAY = "DURABLE_TEST_RETRY_DELAY"
ENV_BROKER = "DURABLE_TEST_BROKER"
ENV_RECOVERY_AFTER = "DURABLE_TEST_RECOVERY_AFTER"


def amqp_queue(queue: str) -> Queue:
    """The RabbitMQ queue of a test: its own direct exchange, expiring once unused."""
    return Queue(
        queue,
        Exchange(queue, type="direct"),
        routing_key=queue,
        queue_arguments={"x-expires": AMQP_QUEUE_EXPIRES_MS},
    )


def make_app(
    redis_url: str,
    prefix: str,
    queue: str,
    visibility_timeout: float = 2.0,
    broker: str = REDIS,
    recovery_after: float | None = 60.0,
) -> Celery:
    """Return an app whose broker keys, queue and journals belong to ``prefix`` alone.

    With ``broker="amqp"`` the messages go through RabbitMQ (``AMQP_URL``), on a queue
    of this test's own; a message whose worker died comes back when the broker sees its
    connection close, not after a visibility timeout.
    """
    broker_url = AMQP_URL if broker == AMQP else redis_url
    app = Celery(f"system-{prefix}", broker=broker_url, backend=redis_url, set_as_current=False)
    if broker == AMQP:
        app.conf.task_queues = [amqp_queue(queue)]
    else:
        app.conf.broker_transport_options = {
            # Redelivery of a message whose worker died comes after this many seconds.
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # Every kombu key (queue, unacked hash and index, mutex) carries the test's
            # prefix, so no other worker on this Redis ever restores or reads our messages.
            "global_keyprefix": f"{prefix}:kombu:",
        }
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        # Below the visibility timeout, as it must be (README): a deferred delivery waits
        # at most this long, and a killed worker's lease is over before its message is
        # back.
        durable_lease_ttl=1.0,
        durable_recovery_after=recovery_after,
    )
    return app


def step_name(index: int) -> str:
    return f"step-{index}"


@dataclass(frozen=True)
class Records:
    """Names of the keys where workers record what ran, outside the journal."""

    prefix: str

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "rec", *map(str, parts)])

    def runs(self, task_id: str, step: str) -> str:
        """Counter: how many times the function of ``step`` started."""
        return self._key("runs", task_id, step)

    def pids(self, task_id: str, step: str) -> str:
        """List: the pid of the process of each run of ``step``."""
        return self._key("pids", task_id, step)

    def block(self, task_id: str, step: str) -> str:
        """One-shot flag the test sets: the next run of ``step`` waits for ``release``."""
        return self._key("block", task_id, step)

    def release(self, task_id: str, step: str, run: int) -> str:
        """List that run number ``run`` of ``step``, if blocked, waits on."""
        return self._key("release", task_id, step, run)

    def bodies(self, task_id: str) -> str:
        """Counter: how many times the task body started (one per execution)."""
        return self._key("bodies", task_id)

    def draws(self, task_id: str, execution: int) -> str:
        """List: the random values that execution number ``execution`` drew, in order."""
        return self._key("draws", task_id, execution)

    def deliveries(self, task_id: str) -> str:
        """Counter: how many times a worker started the task (task_prerun)."""
        return self._key("deliveries", task_id)

    def outcomes(self, task_id: str) -> str:
        """List: JSON of each delivery that ended (task_postrun): state and value or error."""
        return self._key("outcomes", task_id)

    def receipts(self, task_id: str) -> str:
        """List: JSON of each message of the task a worker received (task_received)."""
        return self._key("receipts", task_id)

    def caught(self, task_id: str) -> str:
        """List: JSON of each TerminalError the task body caught from a step."""
        return self._key("caught", task_id)

    def hold_after(self, task_id: str) -> str:
        """One-shot flag the test sets: the next task_postrun waits, before the late ack."""
        return self._key("hold-after", task_id)

    def hold_release(self, task_id: str) -> str:
        """List a held task_postrun waits on."""
        return self._key("hold-release", task_id)

    def active(self, task_id: str) -> str:
        """Counter: how many bodies of the task are running right now."""
        return self._key("active", task_id)

    def max_active(self, task_id: str) -> str:
        """The most bodies of the task that ever ran at once."""
        return self._key("max-active", task_id)

    def kills(self, task_id: str) -> str:
        """List: the pid of each body that SIGKILLed its own process."""
        return self._key("kills", task_id)
