"""The Celery app that the worker subprocesses of throughput.py and latency.py run.

The worker reads where to connect from the environment (``BENCH_REDIS_URL``,
``BENCH_PREFIX``, ``BENCH_QUEUE``); the benchmark process imports the same app and
calls ``configure`` to send tasks. The durable task and the plain tasks run the same
step function the same number of times, so their difference is what durability costs.
"""

from __future__ import annotations

import base64
import os

from celery import Celery

import celery_durable
from celery_durable import DurableTask

STEP_NAMES = [f"step-{i}" for i in range(10_000)]

app = Celery("bench", set_as_current=False)


def configure(redis_url: str, prefix: str, queue: str, journal_url: str | None = None) -> Celery:
    """Point ``app`` at ``redis_url``, with broker, result and journal keys under ``prefix``
    (the journals on ``journal_url`` when given: ``memory.py`` keeps them apart)."""
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": f"{prefix}:kombu:"},
        result_backend_transport_options={"global_keyprefix": f"{prefix}:result:"},
        result_expires=600,
        durable_redis_url=journal_url or redis_url,
        # A journal Redis of its own has the default prefix: the keys' own length counts.
        durable_key_prefix="durable" if journal_url else f"{prefix}:durable",
        durable_retention=600,
    )
    return app


def step(i: int) -> int:
    """What every step does: next to nothing, so that the figures show overhead."""
    return i * i


@app.task(base=DurableTask, bind=True, name="bench.durable")
def durable(self: DurableTask, n: int) -> int:
    run = self.ctx.run
    return sum(run(STEP_NAMES[i], step, i) for i in range(n))


@app.task(
    base=DurableTask, bind=True, name="bench.keyed", durable_concurrency_key=lambda n, key: key
)
def keyed(self: DurableTask, n: int, key: str) -> int:
    """``bench.durable`` under a concurrency key (``flow_control.py``)."""
    run = self.ctx.run
    return sum(run(STEP_NAMES[i], step, i) for i in range(n))


@app.task(base=DurableTask, bind=True, name="bench.unkeyed")
def unkeyed(self: DurableTask, n: int, key: str) -> int:
    """``bench.keyed`` without its key: the same arguments, the same steps."""
    run = self.ctx.run
    return sum(run(STEP_NAMES[i], step, i) for i in range(n))


@app.task(base=DurableTask, bind=True, name="bench.nap")
def nap(self: DurableTask, seconds: float) -> None:
    """Sleeps, suspended, until it is cancelled (``flow_control.py``)."""
    self.ctx.run("before", step, 1)
    self.ctx.sleep(seconds)


def value_of(size: int) -> str:
    """A step's value of ``size`` bytes of text: one letter repeated, or with
    ``BENCH_RANDOM_VALUES=1`` random base64 text (which compresses about as little as
    text can: 6 bits of every 8 are random)."""
    if os.environ.get("BENCH_RANDOM_VALUES") == "1":
        return base64.b64encode(os.urandom(size)).decode()[:size]
    return "v" * size


@app.task(base=DurableTask, bind=True, name="bench.values")
def values(self: DurableTask, n: int, size: int) -> int:
    """``n`` steps that return ``size`` bytes each (``memory.py``'s finished invocations)."""
    run = self.ctx.run
    return sum(len(run(STEP_NAMES[i], value_of, size)) for i in range(n))


@app.task(base=DurableTask, bind=True, name="bench.values_no_journal", durable_journal_retention=0)
def values_no_journal(self: DurableTask, n: int, size: int) -> int:
    """``bench.values`` whose steps are dropped when it finishes."""
    run = self.ctx.run
    return sum(len(run(STEP_NAMES[i], value_of, size)) for i in range(n))


@app.task(name="bench.plain")
def plain(n: int) -> int:
    return sum(step(i) for i in range(n))


@app.task(name="bench.plain_late", acks_late=True, reject_on_worker_lost=True)
def plain_late(n: int) -> int:
    """The plain task with DurableTask's acknowledgement settings."""
    return sum(step(i) for i in range(n))


if "BENCH_REDIS_URL" in os.environ:
    configure(
        os.environ["BENCH_REDIS_URL"],
        os.environ.get("BENCH_PREFIX", "bench"),
        os.environ.get("BENCH_QUEUE", "bench"),
        os.environ.get("BENCH_JOURNAL_URL"),
    )


@app.task(name="bench.where")
def where() -> str:
    """Where the worker imported celery_durable from."""
    return str(celery_durable.__file__)


@app.task(base=DurableTask, bind=True, name="bench.step_timing")
def step_timing(self: DurableTask, n: int) -> dict[str, float]:
    """Time, inside the worker, ``n`` steps and ``n`` PINGs on the journal's client."""
    import statistics
    import time

    from celery_durable.runtime import runtime_for

    ping = runtime_for(self.app).store.client.ping
    run = self.ctx.run
    clock = time.perf_counter
    pings, steps = [], []
    for i in range(n):
        t0 = clock()
        ping()
        t1 = clock()
        run(STEP_NAMES[i], step, i)
        t2 = clock()
        pings.append(t1 - t0)
        steps.append(t2 - t1)
    return {
        "ping_us": statistics.median(pings) * 1e6,
        "step_us": statistics.median(steps) * 1e6,
    }
