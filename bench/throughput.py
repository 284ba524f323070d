"""Throughput: tasks per second of a 10-step DurableTask against plain Celery tasks.

One worker subprocess per concurrency (``celery -A bench.celery_app worker
--pool=prefork -c 4``, then ``-c 2``), one private Redis as broker, result backend and
journal store. Three kinds of task run the same 10 step functions: ``durable``
(DurableTask, 10 ``ctx.run``), ``plain`` (Celery's defaults) and ``plain_late``
(``acks_late`` and ``reject_on_worker_lost``, as DurableTask sets them). Same result
backend configuration for all.

A warm-up round (not counted) runs first. Then each round, for each kind in rotating
order, measures two ways:

- end to end: send ``--tasks`` tasks at once and wait for all their results; tasks per
  second = tasks / (first send to the last result stored). The sending process competes with the
  worker for the CPUs, as it does in real use on one machine.
- drain: stop the worker consuming (remote control ``cancel_consumer``), queue the
  tasks, start it again (``add_consumer``) and wait for all results: the worker's own
  rate on a full queue, tasks / (``add_consumer`` to the last result stored).

"The last result stored" is the latest ``date_done`` the worker wrote in the result
backend, read after the batch (outside its CPU figures). ``ResultSet.get`` returns up to
its polling interval (0.5 s) later, which took up to half of a batch's time; that rate
is kept as ``rate_collected`` in the JSON (the bench reported it up to package 074225b).

The figure is the median over rounds per kind, and the ratio durable/plain.

``--steps`` gives the tasks' sizes: 10 steps (the headline), then 1 and 100, so that the
cost of a step and the fixed cost of an invocation (start and finish) can be told apart.
A size of more than 10 steps runs ``--tasks`` x 10 / steps tasks per batch (at least 50).

    /work/venv/bin/python bench/throughput.py [--concurrency 4 2] [--rounds 4] [--tasks 500]
                                              [--steps 10 1 100] [--modes drain "end to end"]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import _common as c
import redis
from celery.result import ResultSet

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after any PYTHONPATH export
from bench.celery_app import configure

KINDS = ("durable", "plain", "plain_late")
STEPS = 10
TARGET = 0.8
PARTS = ("worker", "redis", "client")


def end_to_end(task: Any, count: int, worker: Any, steps: int = STEPS) -> Batch:
    """Send ``count`` tasks and wait for every result."""
    t0 = time.time()
    results = [task.apply_async((steps,)) for _ in range(count)]
    check(ResultSet(results).get(timeout=600), count, steps)
    return Batch(t0, results, time.time())


def drain(task: Any, count: int, worker: Any, steps: int = STEPS) -> Batch:
    """Queue ``count`` tasks while the worker does not consume, then let it empty the
    queue: the worker's own rate, without the sending process competing for the CPUs."""
    control, queue, destination = task.app.control, worker.queue, [worker.name]
    assert control.cancel_consumer(queue, reply=True, destination=destination), "no reply"
    results = [task.apply_async((steps,)) for _ in range(count)]
    t0 = time.time()
    assert control.add_consumer(queue, reply=True, destination=destination), "no reply"
    started(task, worker, count)
    check(ResultSet(results).get(timeout=600), count, steps)
    return Batch(t0, results, time.time())


class Stalled(Exception):
    """The worker answered ``add_consumer`` but did not consume (a race in Celery's
    consumer control, seen once in a few hundred batches): the batch does not count."""


def started(task: Any, worker: Any, count: int) -> None:
    """Raise ``Stalled`` (after making the worker consume) if it takes nothing in 3 s."""
    broker = redis.Redis.from_url(task.app.conf.broker_url)
    key = f"{worker.env['BENCH_PREFIX']}:kombu:{worker.queue}"
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if broker.llen(key) < count:
                return
            time.sleep(0.01)
        control, destination = task.app.control, [worker.name]
        control.cancel_consumer(worker.queue, reply=True, destination=destination)
        control.add_consumer(worker.queue, reply=True, destination=destination)
        raise Stalled(f"{count} tasks left unconsumed for 3 s")
    finally:
        broker.close()


class Batch(NamedTuple):
    started: float
    """When the first task was sent (end to end) or the worker told to consume (drain)."""
    results: list[Any]
    collected: float
    """When ``ResultSet.get`` returned: up to its polling interval (0.5 s) after the last
    result was stored."""

    def finished(self) -> float:
        """When the worker stored the last result (the backend's ``date_done``)."""
        backend = self.results[0].backend
        return max(
            datetime.fromisoformat(
                backend.get_task_meta(r.id, cache=False)["date_done"]
            ).timestamp()
            for r in self.results
        )


def check(values: list[Any], count: int, steps: int) -> None:
    expected = sum(i * i for i in range(steps))
    assert values == [expected] * count, "wrong results"


def batch_size(tasks: int, steps: int) -> int:
    """Tasks per batch: ``tasks`` up to 10 steps, fewer for longer tasks."""
    return tasks if steps <= STEPS else max(50, tasks * STEPS // steps)


MODES = {"end to end": end_to_end, "drain": drain}


class Meter:
    """CPU seconds used by the worker's processes, the redis-server and this process."""

    def __init__(self, worker: c.Worker, client: Any) -> None:
        self.worker, self.client = worker, client

    def read(self) -> tuple[float, float, float]:
        assert self.worker.process is not None
        return (
            c.group_cpu_seconds(self.worker.process.pid),
            c.redis_cpu_seconds(self.client),
            c.own_cpu_seconds(),
        )


def measure(
    mode: str, task: Any, count: int, worker: c.Worker, meter: Meter, steps: int = STEPS
) -> dict[str, float]:
    """One timed batch: tasks per second, and CPU milliseconds per task by process."""
    for _ in range(3):
        before = meter.read()
        try:
            batch = MODES[mode](task, count, worker, steps)
            break
        except Stalled as stall:
            print(f"# {mode} batch of {task.name}: {stall}; measured again", flush=True)
            time.sleep(30 if steps > STEPS else 5)  # the stalled batch runs out meanwhile
    else:
        raise RuntimeError("the worker stalled three times in a row")
    after = meter.read()
    worker_s, redis_s, client_s = (a - b for a, b in zip(after, before, strict=True))
    return {
        # Up to the last result stored; the sender's ResultSet.get sees it up to 0.5 s later
        # (rate_collected, what this bench reported up to package 074225b).
        "rate": count / (batch.finished() - batch.started),
        "rate_collected": count / (batch.collected - batch.started),
        "cpu_worker_ms": worker_s / count * 1e3,
        "cpu_redis_ms": redis_s / count * 1e3,
        "cpu_client_ms": client_s / count * 1e3,
    }


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[4, 2])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tasks", type=int, default=500, help="tasks per kind and round")
    p.add_argument("--warmup", type=int, default=200, help="tasks per kind, not counted")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, nargs="+", default=[STEPS, 1, 100],
                   help="steps per task, one set of rounds per size")  # fmt: skip
    args = p.parse_args()
    prefix = c.unique_prefix("throughput")

    figures: list[dict[str, Any]] = []
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        app = configure(url, prefix, c.Worker.queue_of(prefix))
        tasks = {kind: app.tasks[f"bench.{kind}"] for kind in KINDS}
        client = redis.Redis.from_url(url)
        for concurrency in args.concurrency:
            with c.Worker(url, prefix, "--pool=prefork", "-c", str(concurrency)) as worker:
                worker.wait_ready(tasks["plain"])
                meter = Meter(worker, client)
                for kind in KINDS:
                    end_to_end(tasks[kind], args.warmup, worker)
                    drain(tasks[kind], args.warmup // 2, worker)
                for steps in args.steps:
                    count = batch_size(args.tasks, steps)
                    runs: dict[tuple[str, str], list[dict[str, float]]] = {
                        (m, k): [] for m in args.modes for k in KINDS
                    }
                    for r in range(args.rounds):
                        shift = r % len(KINDS)
                        for mode in args.modes:
                            for kind in KINDS[shift:] + KINDS[:shift]:
                                runs[mode, kind].append(
                                    measure(mode, tasks[kind], count, worker, meter, steps)
                                )
                            print(
                                f"-c {concurrency} k={steps} round {r} {mode}: "
                                + ", ".join(f"{k} {runs[mode, k][-1]['rate']:.0f}/s" for k in KINDS)
                            )
                        worker.check_alive()
                    for mode in args.modes:
                        figures.append(
                            {
                                "concurrency": concurrency,
                                "mode": mode,
                                "steps": steps,
                                "tasks": count,
                                "runs": {k: runs[mode, k] for k in KINDS},
                            }
                        )
        client.close()
        app.close()

    rows, cpu_rows = [], []
    for f in figures:
        runs = f["runs"]
        rates = {k: [run["rate"] for run in runs[k]] for k in KINDS}
        med = {k: c.median(rates[k]) for k in KINDS}
        paired = [d / p for d, p in zip(rates["durable"], rates["plain"], strict=True)]
        paired_late = [d / p for d, p in zip(rates["durable"], rates["plain_late"], strict=True)]
        f["ratio"] = c.median(paired)
        f["ratio_of_medians"] = med["durable"] / med["plain"]
        f["ratio_late"] = c.median(paired_late)
        headline = f["concurrency"] == 4 and f["steps"] == STEPS
        target = f"{TARGET}: {'met' if f['ratio'] >= TARGET else 'MISSED'}"
        rows.append(
            [
                f["steps"],
                f["concurrency"],
                f["mode"],
                f"{med['durable']:.0f}",
                f"{med['plain']:.0f}",
                f"{med['plain_late']:.0f}",
                f"{f['ratio']:.2f}",
                f"{min(paired):.2f}-{max(paired):.2f}",
                f"{f['ratio_of_medians']:.2f}",
                f"{f['ratio_late']:.2f}",
                target if headline else "",
            ]
        )
        totals = {
            k: c.median([sum(run[f"cpu_{part}_ms"] for part in PARTS) for run in runs[k]])
            for k in KINDS
        }
        for k in KINDS:
            cpu = {part: c.median([run[f"cpu_{part}_ms"] for run in runs[k]]) for part in PARTS}
            cpu_rows.append(
                [f["steps"], f["concurrency"], f["mode"], k]
                + [f"{cpu[part]:.2f}" for part in PARTS]
                + [f"{totals[k]:.2f}", f"{totals[k] / totals['plain']:.2f}"]
            )
    print()
    print(
        f"Throughput, k-step tasks, prefork, {args.rounds} rounds x {args.tasks} tasks "
        "per kind (fewer past 10 steps). Median tasks/s; ratios are medians of the per-round "
        "ratios (the kinds of one round run back to back)"
    )
    print(
        c.table(
            ["k", "-c", "mode", "durable/s", "plain/s", "plain_late/s", "durable/plain",
             "per-round range", "ratio of medians", "durable/plain_late", "target >="],
            rows,
        )
    )  # fmt: skip
    print()
    print(
        "CPU milliseconds per task (median over rounds), by process; total = median of the "
        "rounds' sums"
    )
    print(
        c.table(
            ["k", "-c", "mode", "kind", "worker (all processes)", "redis-server", "sender",
             "total", "total / plain's"],
            cpu_rows,
        )
    )  # fmt: skip
    c.write_json(args.json, {"machine": info, "figures": figures, "target": TARGET})


if __name__ == "__main__":
    main()
