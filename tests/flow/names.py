"""What the test process and the worker subprocesses of the flow-control tests share.

The workers import ``tests.flow.proj``, which builds its app with ``make_app`` from
environment variables; the test process builds its client app with the same function.
Everything a worker does that a test checks is recorded in Redis under
``<prefix>:rec:``, outside the journal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery

REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The Redis transport's visibility timeout: a dead worker's message comes back after it.
VISIBILITY_TIMEOUT = 3.0
#: Below half the visibility timeout: a killed worker's lease is over before its message
#: comes back.
LEASE_TTL = 1.0
#: The sweep looks for deadlines (and lost invocations) every quarter of a second.
RECOVERY_AFTER = 1.0

# Task names.
SAGA = "fl.saga"
SHIP = "fl.ship"
TRANSFER = "fl.transfer"
HOLD = "fl.hold"
NAP = "fl.nap"

# Environment variables the worker subprocesses read.
ENV_PREFIX = "FL_PREFIX"
ENV_QUEUE = "FL_QUEUE"
#: Set on one worker: it SIGKILLs itself at the named point of a concurrency key's
#: hand-over (``give-back``: its invocation finished, its slot not yet given back;
#: ``grant``: the slot was handed to a waiter, which is not yet told).
ENV_DIE_AT = "FL_DIE_AT"


def make_app(prefix: str, queue: str) -> Celery:
    """An app whose broker keys, queues and journals belong to ``prefix`` alone."""
    app = Celery(f"fl-{prefix}", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    app.conf.broker_transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "global_keyprefix": f"{prefix}:kombu:",
    }
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=REDIS_URL,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        durable_lease_ttl=LEASE_TTL,
        durable_recovery_after=RECOVERY_AFTER,
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

    def spans(self, key: str) -> str:
        """List: JSON ``[task id, step, start, end]`` of each step run under a concurrency key."""
        return self._key("spans", key)

    def block(self, task_id: str) -> str:
        """One-shot flag: the next run of the step of ``task_id`` waits to be killed."""
        return self._key("block", task_id)

    def entered(self, task_id: str, step: str) -> str:
        """List: the pid of each run of a step that waits to be killed."""
        return self._key("entered", task_id, step)

    def died(self) -> str:
        """List: JSON of each worker that killed itself where ``ENV_DIE_AT`` said."""
        return self._key("died")
