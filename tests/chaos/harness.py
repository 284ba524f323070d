"""What the chaos test and its worker subprocesses share: the app, the task, the evidence.

Broker, result backend and journal are one private ``redis-server`` that the test
kills and restarts (the usual single-Redis setup). What the steps did is recorded
elsewhere, in the suite's Redis (``127.0.0.1:6379``) under a prefix of the run's own,
so that a restart of the private Redis cannot lose the evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from celery import Celery

TASK = "chaos.pipeline"
STEPS = 5

#: Seconds. A killed worker's message comes back after the visibility timeout; the
#: lease is well below it (the library warns otherwise).
VISIBILITY_TIMEOUT = 3.0
LEASE_TTL = 1.0
UNACKED_MUTEX_EXPIRE = 5
#: The task's max_retries: a worker that dies inside a step counts as a failed attempt
#: of it, and the invocation fails for good after max_retries + 1 deaths in a row. The
#: chaos run must not reach that limit by bad luck, so it is high.
MAX_RETRIES = 50
#: A step sleeps this long (seconds, uniform) so that kills land inside steps.
STEP_SLEEP = (0.010, 0.200)

# Environment variables the worker subprocesses read.
ENV_BROKER_URL = "DURABLE_CHAOS_BROKER_URL"
ENV_EVIDENCE_URL = "DURABLE_CHAOS_EVIDENCE_URL"
ENV_PREFIX = "DURABLE_CHAOS_PREFIX"
ENV_INCARNATION = "DURABLE_CHAOS_INCARNATION"


def make_app(broker_url: str, prefix: str) -> Celery:
    """Return an app whose broker keys, queue, results and journals belong to ``prefix``."""
    app = Celery(f"chaos-{prefix}", broker=broker_url, backend=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # The lock a worker takes while it restores expired messages. kombu keeps it
            # 300 s when its holder dies (a worker killed, or crashed by a Redis restart,
            # while restoring), and nothing is redelivered meanwhile: keep it in scale
            # with the visibility timeout.
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
            "global_keyprefix": f"{prefix}:kombu:",
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=queue_name(prefix),
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=3600,
        durable_redis_url=broker_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=3600,
        durable_lease_ttl=LEASE_TTL,
    )
    return app


def queue_name(prefix: str) -> str:
    return f"{prefix}-q"


def step_name(index: int) -> str:
    return f"step-{index}"


def step_value(order: str, index: int) -> dict[str, Any]:
    """The value of step ``index`` of ``order``: a function of the arguments alone."""
    digest = hashlib.sha256(f"{order}/{index}".encode()).hexdigest()
    return {"index": index, "order": order, "amount": int(digest[:6], 16)}


@dataclass(frozen=True)
class Evidence:
    """Names of the keys (in the suite's Redis) where the workers record what ran."""

    prefix: str

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "ev", *map(str, parts)])

    def runs(self, task_id: str, index: int) -> str:
        """Counter: how many times the function of step ``index`` started."""
        return self._key("runs", task_id, index)

    def log(self, task_id: str, index: int) -> str:
        """List: JSON ``enter`` and ``exit`` records of each run of step ``index``."""
        return self._key("log", task_id, index)

    def inflight(self, incarnation: str) -> str:
        """Hash, pid -> ``task|index|run|entered``: the run of a step a process of
        worker ``incarnation`` is inside (from the step's start until ``ctx.run``
        returned or raised in the body)."""
        return self._key("inflight", incarnation)

    def inflight_pattern(self) -> str:
        return self._key("inflight", "*")

    def bodies(self, task_id: str) -> str:
        """Counter: executions of the task body."""
        return self._key("bodies", task_id)

    def draws(self, task_id: str, execution: int) -> str:
        """List: the ``ctx.rand`` values execution number ``execution`` drew, in order."""
        return self._key("draws", task_id, execution)

    def outcomes(self, task_id: str) -> str:
        """List: JSON of each delivery that ended (task_postrun): state, retry reason."""
        return self._key("outcomes", task_id)
