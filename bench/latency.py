"""Latency of one invocation, end to end: ``apply_async`` to ``result.get()``, one at a time.

A worker subprocess (``celery -A bench.celery_app worker --pool=prefork -c 1`` by default)
runs a DurableTask of 0, 1, 10 and 100 steps and plain Celery tasks of the same shape:
``plain`` (Celery's defaults) and ``plain_late`` (``acks_late`` and
``reject_on_worker_lost``, as DurableTask sets them). Same broker and result backend
(one private Redis) for all. The kinds alternate sample by sample; warm-up samples are
not counted. Then, with MONITOR, the Redis commands one 10-step task of each kind costs,
and ``ctx.run`` against PING timed inside the worker process.

    /work/venv/bin/python bench/latency.py [--samples 200] [--pool prefork|solo]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after any PYTHONPATH export
from bench.celery_app import configure

KINDS = ("durable", "plain", "plain_late")


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--shapes", type=int, nargs="+", default=[0, 1, 10, 100])
    p.add_argument("--samples", type=int, default=200, help="per kind and shape")
    p.add_argument("--warmup", type=int, default=20, help="per kind and shape, not counted")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo"])
    args = p.parse_args()
    prefix = c.unique_prefix("latency")

    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        options = ["--pool=solo"] if args.pool == "solo" else ["--pool=prefork", "-c", "1"]
        with c.Worker(url, prefix, *options) as worker:
            app = configure(url, prefix, worker.queue)
            tasks = {kind: app.tasks[f"bench.{kind}"] for kind in KINDS}
            worker.wait_ready(tasks["plain"])
            samples = measure(args, tasks)
            commands = count_commands(url, tasks)
            timing = [
                app.tasks["bench.step_timing"].apply_async((500,)).get(timeout=60) for _ in range(5)
            ]
            app.close()

    rows = []
    for n in args.shapes:
        base = c.median(samples[n]["plain"])
        for kind in KINDS:
            xs = samples[n][kind]
            rows.append(
                [
                    n,
                    kind,
                    f"{c.median(xs) * 1e3:.2f}",
                    f"{c.percentile(xs, 90) * 1e3:.2f}",
                    f"{c.median(xs) / base:.2f}",
                    f"{(c.median(xs) - base) * 1e3:+.2f}",
                ]
            )
    pool = "solo" if args.pool == "solo" else "prefork -c 1"
    print()
    print(
        f"Latency of one task, apply_async to result.get(), sequential ({pool}; "
        f"{args.samples} samples per row, kinds interleaved)"
    )
    print(
        c.table(["steps", "kind", "median ms", "p90 ms", "x plain", "vs plain ms"], rows)
    )  # fmt: skip
    print()
    print("Redis commands for one 10-step task (client = from a connection; lua = inside scripts)")
    print(
        c.table(
            ["kind", "client commands", "inside Lua", "journal commands"],
            [
                [kind, sum(cmds["client"].values()), sum(cmds["lua"].values()),
                 ", ".join(f"{k} x{v}" for k, v in sorted(cmds["journal"].items()))]
                for kind, cmds in commands.items()
            ],
        )
    )  # fmt: skip
    ping_us = c.median([t["ping_us"] for t in timing])
    step_us = c.median([t["step_us"] for t in timing])
    print()
    print(
        f"Inside the worker (5 x 500 steps, interleaved with PINGs on the journal's client): "
        f"ctx.run {step_us:.1f} us, PING {ping_us:.1f} us, ratio {step_us / ping_us:.2f}"
    )
    c.write_json(
        args.json,
        {
            "machine": info,
            "pool": pool,
            "in_worker": {"ping_us": ping_us, "step_us": step_us},
            "samples": {str(n): v for n, v in samples.items()},
            "commands": commands,
        },
    )


def measure(args: Any, tasks: dict[str, Any]) -> dict[int, dict[str, list[float]]]:
    clock = time.perf_counter
    samples: dict[int, dict[str, list[float]]] = {}
    for n in args.shapes:
        expected = sum(i * i for i in range(n))
        per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for i in range(args.warmup + args.samples):
            shift = i % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                t0 = clock()
                value = tasks[kind].apply_async((n,)).get(timeout=60)
                elapsed = clock() - t0
                assert value == expected, (kind, n, value)
                if i >= args.warmup:
                    per_kind[kind].append(elapsed)
        samples[n] = per_kind
        print(
            f"{n} steps: "
            + ", ".join(f"{k} {c.median(v) * 1e3:.2f} ms" for k, v in per_kind.items())
        )
    return samples


def count_commands(url: str, tasks: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """The Redis commands one 10-step task of each kind makes, broker and backend included."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for kind in KINDS:
        tasks[kind].apply_async((10,)).get(timeout=30)  # every connection is open already
        time.sleep(0.3)
        with c.Monitor(url) as monitor:
            tasks[kind].apply_async((10,)).get(timeout=30)
            time.sleep(0.3)  # the late ack may come just after the result
        client: Counter[str] = Counter()
        lua: Counter[str] = Counter()
        journal: Counter[str] = Counter()
        for m in monitor.commands:
            name = m["command"].split(" ", 1)[0].upper()
            (lua if m["client_type"] == "lua" else client)[name] += 1
            if ":durable" in m["command"] and m["client_type"] != "lua":
                journal[name] += 1
        out[kind] = {"client": dict(client), "lua": dict(lua), "journal": dict(journal)}
    return out


if __name__ == "__main__":
    main()
