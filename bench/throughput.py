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
  second = tasks / (first send to last result). The sending process competes with the
  worker for the CPUs, as it does in real use on one machine.
- drain: stop the worker consuming (remote control ``cancel_consumer``), queue the
  tasks, start it again (``add_consumer``) and wait for all results: the worker's own
  rate on a full queue.

The figure is the median over rounds per kind, and the ratio durable/plain.

    /work/venv/bin/python bench/throughput.py [--concurrency 4 2] [--rounds 4] [--tasks 500]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import redis
from celery.result import ResultSet

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after any PYTHONPATH export
from bench.celery_app import configure

KINDS = ("durable", "plain", "plain_late")
STEPS = 10
TARGET = 0.8


def end_to_end(task: Any, count: int, worker: Any) -> float:
    """Send ``count`` tasks, wait for every result; return tasks per second."""
    t0 = time.perf_counter()
    results = [task.apply_async((STEPS,)) for _ in range(count)]
    check(ResultSet(results).get(timeout=600), count)
    return count / (time.perf_counter() - t0)


def drain(task: Any, count: int, worker: Any) -> float:
    """Queue ``count`` tasks while the worker does not consume, then time it emptying the
    queue: the worker's own rate, without the sending process competing for the CPUs."""
    control, queue, destination = task.app.control, worker.queue, [worker.name]
    assert control.cancel_consumer(queue, reply=True, destination=destination), "no reply"
    results = [task.apply_async((STEPS,)) for _ in range(count)]
    t0 = time.perf_counter()
    assert control.add_consumer(queue, reply=True, destination=destination), "no reply"
    check(ResultSet(results).get(timeout=600), count)
    return count / (time.perf_counter() - t0)


def check(values: list[Any], count: int) -> None:
    expected = sum(i * i for i in range(STEPS))
    assert values == [expected] * count, "wrong results"


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


def measure(mode: str, task: Any, count: int, worker: c.Worker, meter: Meter) -> dict[str, float]:
    """One timed batch: tasks per second, and CPU milliseconds per task by process."""
    before = meter.read()
    rate = MODES[mode](task, count, worker)
    after = meter.read()
    worker_s, redis_s, client_s = (a - b for a, b in zip(after, before, strict=True))
    return {
        "rate": rate,
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
                runs: dict[tuple[str, str], list[dict[str, float]]] = {
                    (m, k): [] for m in args.modes for k in KINDS
                }
                for r in range(args.rounds):
                    shift = r % len(KINDS)
                    for mode in args.modes:
                        for kind in KINDS[shift:] + KINDS[:shift]:
                            runs[mode, kind].append(
                                measure(mode, tasks[kind], args.tasks, worker, meter)
                            )
                        print(
                            f"-c {concurrency} round {r} {mode}: "
                            + ", ".join(f"{k} {runs[mode, k][-1]['rate']:.0f}/s" for k in KINDS)
                        )
                    worker.check_alive()
                for mode in args.modes:
                    figures.append(
                        {
                            "concurrency": concurrency,
                            "mode": mode,
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
        headline = f["concurrency"] == 4 and f["mode"] == "end to end"
        target = f"{TARGET}: {'met' if f['ratio'] >= TARGET else 'MISSED'}"
        rows.append(
            [
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
        for k in KINDS:
            cpu = {
                part: c.median([run[f"cpu_{part}_ms"] for run in runs[k]])
                for part in ("worker", "redis", "client")
            }
            cpu_rows.append(
                [f["concurrency"], f["mode"], k]
                + [f"{cpu[part]:.2f}" for part in ("worker", "redis", "client")]
                + [f"{sum(cpu.values()):.2f}"]
            )
    print()
    print(
        f"Throughput, {STEPS}-step tasks, prefork, {args.rounds} rounds x {args.tasks} tasks "
        "per kind. Median tasks/s; ratios are medians of the per-round ratios (the kinds of "
        "one round run back to back)"
    )
    print(
        c.table(
            ["-c", "mode", "durable/s", "plain/s", "plain_late/s", "durable/plain",
             "per-round range", "ratio of medians", "durable/plain_late", "target >="],
            rows,
        )
    )  # fmt: skip
    print()
    print("CPU milliseconds per task (median over rounds), by process")
    print(
        c.table(
            ["-c", "mode", "kind", "worker (all processes)", "redis-server", "sender", "total"],
            cpu_rows,
        )
    )  # fmt: skip
    c.write_json(args.json, {"machine": info, "figures": figures, "target": TARGET})


if __name__ == "__main__":
    main()
