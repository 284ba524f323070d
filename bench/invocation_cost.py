"""The fixed cost of an invocation through ``DurableTask``, and of encoding its call.

Every execution encodes its call (task name, arguments, execution options) once, at its
start, so that the start which creates the invocation stores it (the recovery sweep
publishes a lost invocation again from it), and reuses it at its end (suspend, pause,
fail). Before, only an execution that suspended, paused or finished encoded it, at its
end. This script measures what that costs, interleaved on one private Redis:

- ``PING``: the round-trip floor, on the store's client;
- ``call``: ``DurableTask._call()`` alone, for a request shaped like a worker's;
- ``apply``: one ``apply()`` of a 1-step task under a new task id, its journal in Redis
  (``durable_eager_journal = "redis"``): start, one step, finish, and Celery's eager
  tracing around them.

Each figure is the median per op over ``--ops`` ops, the median over ``--repeats``.
Measure two packages by running it once per package (``PYTHONPATH``, see README.md),
alternating.

    .venv/bin/python bench/invocation_cost.py [--ops 2000] [--repeats 5]
"""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

import _common as c
from celery import Celery

from celery_durable import DurableTask
from celery_durable.runtime import release_runtime, runtime_for


def make_app(url: str, prefix: str) -> tuple[Celery, Any]:
    app = Celery("bench-invocation", broker="memory://", set_as_current=False)
    app.conf.update(
        durable_redis_url=url,
        durable_key_prefix=prefix,
        durable_eager_journal="redis",
        durable_eviction_check="ignore",
    )

    @app.task(base=DurableTask, bind=True, name="bench.one_step")
    def one_step(self: DurableTask, order: str, n: int) -> int:
        return int(self.ctx.run("step", int, n))

    return app, one_step


def worker_like_request(task: Any) -> None:
    """Push a request with the fields a worker's request of a plain message has."""
    task_id = str(uuid.uuid4())
    task.push_request(
        id=task_id, root_id=task_id, parent_id=None, args=["order-1", 3], kwargs={},
        retries=0, headers=None, reply_to=str(uuid.uuid4()), correlation_id=task_id,
        delivery_info={"exchange": "", "routing_key": "celery", "priority": 0,
                       "redelivered": False},
        is_eager=False,
    )  # fmt: skip


def measure(app: Celery, task: Any, ops: int) -> dict[str, float]:
    client = runtime_for(app).store.client
    worker_like_request(task)
    times: dict[str, list[float]] = {"ping": [], "call": [], "apply": []}
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(ops):
            t0 = clock()
            client.ping()
            t1 = clock()
            task._call()
            t2 = clock()
            task.pop_request()
            task.apply(("order-1", i), task_id=f"inv-{uuid.uuid4().hex}")
            t3 = clock()
            worker_like_request(task)
            times["ping"].append(t1 - t0)
            times["call"].append(t2 - t1)
            times["apply"].append(t3 - t2)
    finally:
        gc.enable()
        task.pop_request()
    return {name: c.median(values) * 1e6 for name, values in times.items()}


def main() -> None:
    p = c.parser(__doc__ or "")
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    prefix = c.unique_prefix("invocation")
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        app, task = make_app(url, prefix)
        measure(app, task, 200)  # warm up: connections, scripts
        runs = [measure(app, task, args.ops) for _ in range(args.repeats)]
        release_runtime(app)
    figures = {name: c.median([run[name] for run in runs]) for name in runs[0]}
    rows = [[name, f"{value:.1f}", ", ".join(f"{run[name]:.1f}" for run in runs)]
            for name, value in figures.items()]  # fmt: skip
    rows.append(["apply / ping", f"{figures['apply'] / figures['ping']:.2f}", ""])
    print(c.table(["op", "median µs", "per repeat"], rows))
    c.write_json(args.json, {"machine": info, "package": c.package_version(),
                             "figures": figures, "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
