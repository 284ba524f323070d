"""What the outage tests and their worker subprocesses share: environment variables,
task names, the app factory, the keys of the records in the main Redis, and where the
library keeps its outage constants.

Self-contained on purpose: nothing here depends on another test package.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from celery import Celery

from celery_durable import DurableTask

ENV_SHARED_URL = "OUTAGE_SHARED_URL"
ENV_RECORDS_URL = "OUTAGE_RECORDS_URL"
ENV_PREFIX = "OUTAGE_PREFIX"
ENV_VISIBILITY = "OUTAGE_VISIBILITY"

PIPELINE = "outage.pipeline"
#: The same pipeline with ``max_retries=0``: its steps' default policy allows one attempt.
PIPELINE_ONE_ATTEMPT = "outage.pipeline_one_attempt"
FLAKY = "outage.flaky"
#: Seconds before the flaky step's second attempt.
FLAKY_INTERVAL = 0.5
BLOCK_SECONDS = 120


class Keys:
    """Record and control keys of the main Redis; the test builds the same names."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "rec", *map(str, parts)])

    def runs(self, task_id: str, step: str) -> str:
        return self._key("runs", task_id, step)

    def block(self, task_id: str, step: str) -> str:
        """One-shot flag: the next run of ``step`` waits until ``release`` is pushed."""
        return self._key("block", task_id, step)

    def release(self, task_id: str, step: str) -> str:
        return self._key("release", task_id, step)

    def entered(self, task_id: str, step: str) -> str:
        """List: one item per run of ``step`` that started (pid)."""
        return self._key("entered", task_id, step)

    def refuse_on_publish(self, task_id: str) -> str:
        """One-shot flag: the next message of ``task_id`` this worker publishes first makes
        the shared Redis refuse writes (maxmemory 1, noeviction)."""
        return self._key("refuse-on-publish", task_id)

    def refused(self, task_id: str) -> str:
        """List: set when the publish trigger made the shared Redis refuse writes."""
        return self._key("refused", task_id)

    def outcomes(self, task_id: str) -> str:
        """List: JSON of each delivery that ended (task_postrun)."""
        return self._key("outcomes", task_id)

    def receipts(self, task_id: str) -> str:
        """List: JSON of each message of the task a worker received."""
        return self._key("receipts", task_id)


def make_app(shared_url: str, prefix: str, visibility_timeout: float = 60.0) -> Celery:
    """An app whose broker, result backend and journal are all ``shared_url``, with every
    key of the test under ``prefix`` and a queue of its own."""
    app = Celery(f"outage-{prefix}", broker=shared_url, backend=shared_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            # Longer than any outage here: a message that comes back within it was
            # retried or handed back, never restored by the transport.
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            "global_keyprefix": f"{prefix}:kombu:",
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=queue_of(prefix),
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=shared_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        durable_lease_ttl=1.0,
    )
    return app


def queue_of(prefix: str) -> str:
    return f"{prefix}-q"


def retry_module() -> ModuleType:
    """The module that defines ``DurableTask.retry``."""
    return sys.modules[DurableTask.retry.__module__]


def library_constant(name: str) -> Any:
    """A constant of the module that defines ``DurableTask.retry`` (``ENDED_FENCE_HEADER``)."""
    return getattr(retry_module(), name)
