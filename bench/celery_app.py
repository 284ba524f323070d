"""The Celery app that the worker subprocesses of throughput.py and latency.py run.

The worker reads where to connect from the environment (``BENCH_REDIS_URL``,
``BENCH_PREFIX``, ``BENCH_QUEUE``); the benchmark process builds the same app with
``make_app`` to send tasks. The durable task and the plain tasks run the same step
function the same number of times, so their difference is what durability costs.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_durable import DurableTask

STEP_NAMES = [f"step-{i}" for i in range(10_000)]


def step(i: int) -> int:
    """What every step does: next to nothing, so that the figures show overhead."""
    return i * i


def make_app(redis_url: str, prefix: str, queue: str) -> Celery:
    """An app whose broker, result and journal keys all live under ``prefix``."""
    app = Celery("bench", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": f"{prefix}:kombu:"},
        result_backend_transport_options={"global_keyprefix": f"{prefix}:result:"},
        result_expires=600,
        durable_redis_url=redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
    )

    @app.task(base=DurableTask, bind=True, name="bench.durable")
    def durable(self: DurableTask, n: int) -> int:
        run = self.ctx.run
        return sum(run(STEP_NAMES[i], step, i) for i in range(n))

    @app.task(name="bench.plain")
    def plain(n: int) -> int:
        return sum(step(i) for i in range(n))

    @app.task(name="bench.plain_late", acks_late=True, reject_on_worker_lost=True)
    def plain_late(n: int) -> int:
        """The plain task with DurableTask's acknowledgement settings."""
        return sum(step(i) for i in range(n))

    return app


app = make_app(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("BENCH_PREFIX", "bench"),
    os.environ.get("BENCH_QUEUE", "bench"),
)
