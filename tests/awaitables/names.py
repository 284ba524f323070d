"""What the test process and the worker subprocesses of the awaitables tests share.

The workers import ``tests.awaitables.proj``, which builds its app with ``make_app``
from environment variables; the test process builds its client app with the same
function, so both agree on the broker, the queues and the key prefixes.

Redis is the result backend and the journal's store whatever the broker. Everything
a worker does that a test checks is recorded in Redis under ``<prefix>:rec:``,
outside the journal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery
from kombu import Exchange, Queue

REDIS, AMQP = "redis", "amqp"
AMQP_URL = os.environ.get("DURABLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: RabbitMQ deletes a test's queue itself once nobody used it for this long (ms), in
#: case the test process died before its teardown deleted it.
AMQP_QUEUE_EXPIRES_MS = 600_000

#: The Redis transport's visibility timeout: a dead worker's message comes back after it.
VISIBILITY_TIMEOUT = 3.0
#: Below half the visibility timeout, as the README asks: a deferred delivery waits at
#: most this long, and a killed worker's lease is over before its message is back.
LEASE_TTL = 1.0

# Task names.
RACE = "aw.race"
FIRST_OK = "aw.first_ok"
GATHER = "aw.gather"
NAP = "aw.nap"
PARENT = "aw.parent"
FAN_OUT = "aw.fan_out"
OPS = "aw.ops"
#: Children: routed to the children queue when the world splits the queues.
DOUBLE = "aw.child.double"
SQUARE = "aw.child.square"
REFUSE = "aw.child.refuse"
PLAIN_CHILD = "aw.child.plain"
DURABLE_CHILD = "aw.child.durable"
NAPPING_CHILD = "aw.child.napping"

# Environment variables the worker subprocesses read.
ENV_REDIS_URL = "AW_REDIS_URL"
ENV_JOURNAL_URL = "AW_JOURNAL_URL"
ENV_PREFIX = "AW_PREFIX"
ENV_QUEUE = "AW_QUEUE"
ENV_BROKER = "AW_BROKER"
ENV_SPLIT = "AW_SPLIT"
#: Set on one worker: it SIGKILLs itself after claiming a wake-up, before publishing it.
ENV_DIE_BEFORE_PUBLISH = "AW_DIE_BEFORE_PUBLISH"
#: Overrides ``celery_durable.wakeups.CLAIM_VISIBILITY`` (seconds) in one worker.
ENV_CLAIM_VISIBILITY = "AW_CLAIM_VISIBILITY"


def children_queue(queue: str) -> str:
    return f"{queue}-children"


def amqp_queue(queue: str) -> Queue:
    """A RabbitMQ queue of the test's own, with its own direct exchange."""
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
    broker: str = REDIS,
    journal_url: str = "",
    split: bool = False,
) -> Celery:
    """An app whose broker keys, queues and journals belong to ``prefix`` alone.

    Args:
        redis_url: Result backend and records (and the broker, for ``broker="redis"``).
        prefix: The test's own prefix of every key.
        queue: The queue of parents (and of everything, unless ``split``).
        broker: ``redis`` or ``amqp`` (RabbitMQ).
        journal_url: Where journals live; ``redis_url`` when empty.
        split: Route children and celery-durable's own callbacks (``child_succeeded``)
            to ``children_queue(queue)``, so that a test can run them with no worker on
            the parents' queue.
    """
    broker_url = AMQP_URL if broker == AMQP else redis_url
    app = Celery(f"aw-{prefix}", broker=broker_url, backend=redis_url, set_as_current=False)
    children = children_queue(queue)
    if broker == AMQP:
        app.conf.task_queues = [amqp_queue(queue), amqp_queue(children)]
    else:
        app.conf.broker_transport_options = {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # Every kombu key carries the test's prefix: no other worker on this Redis
            # restores or takes our messages.
            "global_keyprefix": f"{prefix}:kombu:",
        }
    if split:
        app.conf.task_routes = {
            "aw.child.*": {"queue": children},
            "celery_durable.*": {"queue": children},
        }
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=journal_url or redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        durable_lease_ttl=LEASE_TTL,
    )
    return app


@dataclass(frozen=True)
class Records:
    """Keys where workers record what ran, outside the journal."""

    prefix: str

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "rec", *map(str, parts)])

    def runs(self, task_id: str, step: str) -> str:
        """Counter: how many times the function of ``step`` started."""
        return self._key("runs", task_id, step)

    def spans(self, task_id: str, step: str) -> str:
        """List: JSON ``[start, end]`` (epoch seconds) of each run of ``step``."""
        return self._key("spans", task_id, step)

    def block(self, task_id: str, step: str) -> str:
        """One-shot flag: the next run of ``step`` waits (until the worker is killed)."""
        return self._key("block", task_id, step)

    def entered(self, task_id: str, step: str) -> str:
        """List: the pid of each blocked run of ``step``, pushed as it starts waiting."""
        return self._key("entered", task_id, step)

    def bodies(self, task_id: str) -> str:
        """List: when each execution of the body started (epoch seconds)."""
        return self._key("bodies", task_id)

    def branches(self, task_id: str) -> str:
        """List: the winner an ``any`` handed each execution of the body."""
        return self._key("branches", task_id)

    def awakeables(self, task_id: str) -> str:
        """Hash: awakeable ids the body handed out, by name."""
        return self._key("awakeables", task_id)

    def receipts(self, task_id: str) -> str:
        """List: the pid of each worker that received a message of ``task_id``."""
        return self._key("receipts", task_id)

    def hold_publish(self, task_id: str) -> str:
        """One-shot flag: publishing a message of ``task_id`` waits once it is sent, so
        that the test can kill the publisher between the broker taking the message and
        the publisher's next write."""
        return self._key("hold-publish", task_id)

    def dead_claimers(self) -> str:
        """List: JSON of each worker that killed itself before publishing a wake-up."""
        return self._key("dead-claimers")
