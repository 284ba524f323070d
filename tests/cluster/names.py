"""What the cluster tests' process and their worker subprocesses share: the app factory,
task names, environment variables and the keys where workers record what ran.

Broker and result backend are the Redis on 6379, under the test's prefix; journals live
on the Redis Cluster (``durable_redis_cluster``), named by the URL of one of its nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

PIPELINE = "cluster.pipeline"
FLAKY = "cluster.flaky"
OVERLAP = "cluster.overlap"
NAP = "cluster.nap"
KEYED = "cluster.keyed"
DEADLINED = "cluster.deadlined"

ENV_REDIS_URL = "DURABLE_CLUSTER_TEST_REDIS_URL"
ENV_JOURNAL_URL = "DURABLE_CLUSTER_TEST_JOURNAL_URL"
ENV_PREFIX = "DURABLE_CLUSTER_TEST_PREFIX"
ENV_QUEUE = "DURABLE_CLUSTER_TEST_QUEUE"
ENV_VISIBILITY = "DURABLE_CLUSTER_TEST_VISIBILITY"


def make_app(
    redis_url: str, journal_url: str, prefix: str, queue: str, visibility_timeout: float = 2.0
) -> Celery:
    """An app whose broker keys, queue and journals belong to ``prefix`` alone."""
    app = Celery(f"cluster-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {
        # A message whose worker died comes back after this many seconds.
        "visibility_timeout": visibility_timeout,
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
        durable_redis_url=journal_url,
        durable_redis_cluster=True,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        # Below the visibility timeout: a killed worker's lease is over before its
        # message comes back.
        durable_lease_ttl=1.0,
    )
    return app


@dataclass(frozen=True)
class Records:
    """Keys (on the Redis at 6379) where workers record what ran, outside the journal."""

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
        """One-shot flag: the next run of ``step`` waits for ``release``."""
        return self._key("block", task_id, step)

    def release(self, task_id: str, step: str) -> str:
        """List a blocked run of ``step`` waits on."""
        return self._key("release", task_id, step)

    def bodies(self, task_id: str) -> str:
        """List: when each execution of the body started (epoch seconds)."""
        return self._key("bodies", task_id)

    def outcomes(self, task_id: str) -> str:
        """List: JSON of each delivery that ended (task_postrun)."""
        return self._key("outcomes", task_id)

    def spans(self, key: str) -> str:
        """List: JSON ``[task id, start, end]`` of each keyed step under a concurrency key."""
        return self._key("spans", key)

    def active(self, task_id: str) -> str:
        """Counter: bodies of the task running right now."""
        return self._key("active", task_id)

    def max_active(self, task_id: str) -> str:
        """The most bodies of the task that ever ran at once."""
        return self._key("max-active", task_id)
