"""The cost model of a shard: what one redis-server process carries of journaled steps.

    /work/venv/bin/python bench/shard_cost.py [--clients 1 2 4 8] [--depth 1 16]
                                              [--seconds 8] [--steps 10] [--pin]

Three parts, against one private redis-server:

1. **Redis CPU of each script** (``script_costs.measure``): ``INFO commandstats``
   usec_per_call of the start, append and finish scripts, and the redis-server's CPU per
   call, one call at a time.
2. **Saturation**: ``P`` client processes (``--clients``) each run invocations through the
   package's ``RedisJournalStore`` for ``--seconds``: start, ``--steps`` appends, finish
   (completed), with many invocations in flight across processes. With ``--depth 1`` each
   process sends one command per round trip, as a worker does. With ``--depth D`` a
   process keeps ``D`` invocations going and sends their appends (and finishes) ``D`` to
   a round trip (a pipeline; starts stay one per round trip): the server's capacity
   when the clients cost little. Per point: steps/s, the redis-server's CPU % (``INFO
   cpu``), the client processes' CPU %, and the whole machine's busy % (``/proc/stat``,
   200 % = both cores), so that one sees who takes the cores. From them: redis-server
   CPU µs per step, and steps/s per fully busy redis-server (computed: 10^6 / µs per
   step). ``--pin`` puts the redis-server on CPU 0 and the clients on CPU 1.
3. **Memory** of finished invocations: a worker subprocess runs ``--invocations``
   10-step ``DurableTask`` s (``bench.durable``); then ``MEMORY USAGE`` of each one's meta
   hash, journal list and completions hash, the listing index's share, and Celery's own
   result key, and ``used_memory``'s growth per invocation.

The model itself (steps/s per shard, shards for 10k / 100k / 1M steps/s, memory per
million finished invocations and at the default retention) is printed at the end; which
figures are measured and which computed is said in each row.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import redis
import script_costs

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after any PYTHONPATH export

RETENTION = 86_400.0
"""The default ``durable_retention``: Celery's ``result_expires``, one day."""
TARGETS = (10_000, 100_000, 1_000_000)
OUTCOME = '{"s":"ok","v":285}'


# -- The client processes -------------------------------------------------------------------


def child(
    url: str,
    prefix: str,
    start_at: float,
    seconds: float,
    k: int,
    depth: int,
    index: int,
    pin: bool,
) -> None:
    """One client process: run invocations from ``start_at`` for ``seconds``; print counts."""
    from celery_durable.fingerprint import fingerprint
    from celery_durable.journal.entries import encode_entry
    from celery_durable.journal.store import StartRequest
    from celery_durable.keys import KeySpace
    from celery_durable.stores.redis import RedisJournalStore

    if pin:
        os.sched_setaffinity(0, {1})
    keys = KeySpace(prefix)
    store = RedisJournalStore.from_url(url, keys)
    client = store.client
    request = StartRequest("bench.shard", fingerprint((10,), {}), 1, 30.0, f"bench:{index}")
    entry = encode_entry("run", "step-1", time.time(), time.time(), "json", "1")
    pipe = client.pipeline(transaction=False)
    # The same store on a pipeline: its appends and finishes queue instead of being sent.
    piped = RedisJournalStore(pipe, keys)  # type: ignore[arg-type]
    serial = 0

    def one_at_a_time() -> int:
        nonlocal serial
        serial += 1
        task_id = f"{prefix}-{index}-{serial}"
        fence = store.start(task_id, request).fence
        for j in range(k):
            assert store.append(task_id, fence, j, entry, False) is None
        store.finish(task_id, fence, "completed", OUTCOME, 600)
        return 1

    def pipelined() -> int:
        nonlocal serial
        ids = []
        for _ in range(depth):
            serial += 1
            task_id = f"{prefix}-{index}-{serial}"
            ids.append((task_id, store.start(task_id, request).fence))
        for j in range(k):
            for task_id, fence in ids:
                piped.append(task_id, fence, j, entry, False)
            assert not any(pipe.execute())
        for task_id, fence in ids:
            piped.finish(task_id, fence, "completed", OUTCOME, 600)
        pipe.execute()
        return depth

    run = one_at_a_time if depth == 1 else pipelined
    for _ in range(3):
        run()  # warm: connection, scripts
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0, done, t0 = c.own_cpu_seconds(), 0, time.time()
    while time.time() < start_at + seconds:
        done += run()
    wall = time.time() - t0
    print(
        json.dumps(
            {
                "invocations": done,
                "steps": done * k,
                "wall": wall,
                "cpu": c.own_cpu_seconds() - cpu0,
            }
        )
    )


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def saturate(url: str, prefix: str, clients: int, depth: int, args: Any) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushall()
    start_at = time.time() + 1.5 + 0.1 * clients
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                url,
                f"{prefix}-{clients}-{depth}",
                str(start_at),
                str(args.seconds),
                str(args.steps),
                str(depth),
                str(i),
                "1" if args.pin else "0",
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        for i in range(clients)
    ]
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0, busy0, t0 = c.redis_cpu_seconds(client), machine_busy(), time.time()
    while time.time() < start_at + args.seconds:
        time.sleep(0.005)
    cpu1, busy1, t1 = c.redis_cpu_seconds(client), machine_busy(), time.time()
    outs = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        if proc.returncode:
            sys.exit(f"a client process failed ({proc.returncode})")
        outs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    client.close()
    wall = t1 - t0
    steps = sum(o["steps"] / o["wall"] for o in outs)
    redis_pct = (cpu1 - cpu0) / wall * 100
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100 * os.cpu_count()  # type: ignore[operator]
    return {
        "clients": clients,
        "depth": depth,
        "steps_per_s": steps,
        "invocations_per_s": sum(o["invocations"] / o["wall"] for o in outs),
        "redis_cpu_pct": redis_pct,
        "clients_cpu_pct": sum(o["cpu"] / o["wall"] for o in outs) * 100,
        "machine_busy_pct": busy,
        "redis_us_per_step": (cpu1 - cpu0) / (steps * wall) * 1e6,
        "capacity_steps_per_s": steps / (redis_pct / 100),
    }


# -- Memory of finished invocations ----------------------------------------------------------


def memory(url: str, count: int) -> dict[str, Any]:
    from bench.celery_app import configure

    prefix = c.unique_prefix("shardmem")
    app = configure(url, prefix, c.Worker.queue_of(prefix))
    task = app.tasks["bench.durable"]
    client = redis.Redis.from_url(url, decode_responses=True)
    with c.Worker(url, prefix, "--pool=prefork", "-c", "2") as worker:
        worker.wait_ready(app.tasks["bench.plain"])
        [r.get(timeout=60) for r in [task.apply_async((10,)) for _ in range(20)]]
        time.sleep(0.5)
        before = client.info("memory")["used_memory"]
        results = [task.apply_async((10,)) for _ in range(count)]
        values = [r.get(timeout=120) for r in results]
        assert values == [285] * count
        time.sleep(0.5)  # the late acks
        after = client.info("memory")["used_memory"]
    app.close()
    durable = f"{prefix}:durable"
    parts: dict[str, list[int]] = {"meta": [], "journal": [], "done": [], "result": []}
    for r in results:
        for part in ("meta", "journal", "done"):
            size = client.memory_usage(f"{durable}:{{{r.id}}}:{part}", samples=0)
            parts[part].append(int(size or 0))
        result_key = f"{prefix}:result:celery-task-meta-{r.id}"
        parts["result"].append(int(client.memory_usage(result_key, samples=0) or 0))
    indexes = [key for key in client.scan_iter(f"{durable}:*", count=1000) if "{" not in key]
    index_bytes = {key: int(client.memory_usage(key, samples=0) or 0) for key in indexes}
    sample = results[0].id
    meta = client.hgetall(f"{durable}:{{{sample}}}:meta")
    ttl = client.pttl(f"{durable}:{{{sample}}}:meta")
    client.close()
    return {
        "count": count,
        "used_memory_per_invocation": (after - before) / count,
        "median_bytes": {part: c.median(sizes) for part, sizes in parts.items()},
        "index_bytes": index_bytes,
        "meta_sample": meta,
        "meta_fields_bytes": {k: len(k) + len(v) for k, v in meta.items()},
        "meta_ttl_ms": ttl,
    }


# -- The model ---------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(a[0], a[1], float(a[2]), float(a[3]), int(a[4]), int(a[5]), int(a[6]), a[7] == "1")
        return
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--depth", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--invocations", type=int, default=1000, help="for the memory figures")
    p.add_argument("--pin", action="store_true", help="redis-server on CPU 0, clients on CPU 1")
    args = p.parse_args()
    prefix = c.unique_prefix("shard")
    with c.private_redis() as url:
        info = c.machine(url)
        c.print_machine(info)
        client = redis.Redis.from_url(url)
        if args.pin:
            os.sched_setaffinity(int(client.info("server")["process_id"]), {0})
        costs = script_costs.measure(url, prefix, 2000, args.steps)
        points = []
        for depth in args.depth:
            for clients in args.clients:
                point = saturate(url, prefix, clients, depth, args)
                points.append(point)
                print(
                    f"depth {depth}, {clients} client processes: {point['steps_per_s']:.0f} "
                    f"steps/s, redis-server {point['redis_cpu_pct']:.0f} % CPU, clients "
                    f"{point['clients_cpu_pct']:.0f} %, machine {point['machine_busy_pct']:.0f} "
                    f"% of 200, {point['redis_us_per_step']:.1f} us of redis CPU per step",
                    flush=True,
                )
        client.flushall()
        client.close()
        mem = memory(url, args.invocations)
    report(args, info, costs, points, mem)


def report(
    args: Any,
    info: dict[str, Any],
    costs: dict[str, Any],
    points: list[dict[str, Any]],
    mem: dict[str, Any],
) -> None:
    k = args.steps
    rows = [[name, f"{f['usec_per_call']:.2f}", f"{f['cpu_us']:.1f}"] for name, f in costs.items()]
    print()
    print("1. Redis-side cost of each script (measured; one call at a time)")
    print(c.table(["what", "us inside Redis (commandstats)", "redis-server CPU us per call"], rows))
    usec = script_costs.per_invocation(costs, k, "usec_per_call")
    cpu = script_costs.per_invocation(costs, k, "cpu_us")
    print(
        f"one {k}-step invocation: {usec:.0f} us inside Redis, {cpu:.0f} us of redis-server "
        f"CPU; per step (the invocation's share included): {usec / k:.1f} / {cpu / k:.1f} us"
    )

    print()
    print(
        f"2. Saturation: client processes running {k}-step invocations for {args.seconds:.0f} s"
        f"{' (redis-server pinned to CPU 0, clients to CPU 1)' if args.pin else ''} (measured; "
        "the last column computed)"
    )
    print(
        c.table(
            [
                "depth",
                "client processes",
                "steps/s",
                "invocations/s",
                "redis-server CPU %",
                "clients CPU %",
                "machine busy % of 200",
                "redis CPU us per step",
                "steps/s at 100 % of a core",
            ],
            [
                [
                    pt["depth"],
                    pt["clients"],
                    f"{pt['steps_per_s']:.0f}",
                    f"{pt['invocations_per_s']:.0f}",
                    f"{pt['redis_cpu_pct']:.0f}",
                    f"{pt['clients_cpu_pct']:.0f}",
                    f"{pt['machine_busy_pct']:.0f}",
                    f"{pt['redis_us_per_step']:.1f}",
                    f"{pt['capacity_steps_per_s']:.0f}",
                ]
                for pt in points
            ],
        )
    )

    print()
    b = mem["median_bytes"]
    index_total = sum(mem["index_bytes"].values())
    per_invocation = b["meta"] + b["journal"] + b["done"] + index_total / mem["count"]
    print(
        f"3. Memory of a finished {k}-step invocation (measured, {mem['count']} invocations, "
        "median MEMORY USAGE)"
    )
    print(
        c.table(
            ["key", "bytes"],
            [
                ["meta hash (incl. the call: task, args, options)", b["meta"]],
                ["journal list", b["journal"]],
                ["completions hash", b["done"]],
                ["listing indexes, per invocation", f"{index_total / mem['count']:.0f}"],
                ["journal keys, total", f"{per_invocation:.0f}"],
                ["Celery's own result key (plain Celery has it too)", b["result"]],
                [
                    "used_memory growth per invocation, all of the above",
                    f"{mem['used_memory_per_invocation']:.0f}",
                ],
            ],
        )
    )
    print(
        "meta fields (field + value bytes): "
        + ", ".join(
            f"{k_}={v}" for k_, v in sorted(mem["meta_fields_bytes"].items(), key=lambda x: -x[1])
        )
    )

    print()
    # The point with the most client processes: the server at its busiest per request.
    best = {
        d: max((pt for pt in points if pt["depth"] == d), key=lambda pt: pt["clients"])
        for d in sorted({pt["depth"] for pt in points})
    }
    rows = []
    for d, pt in best.items():
        capacity = pt["capacity_steps_per_s"]
        rows.append(
            [
                f"steps/s per shard, depth {d} (computed from the {pt['clients']}-process "
                "point: 10^6 / redis CPU us per step)",
                f"{capacity:,.0f}",
            ]
        )
        for target in TARGETS:
            rows.append(
                [
                    f"  shards for {target:,} steps/s at 100 % / 70 % of a core (computed)",
                    f"{math.ceil(target / capacity)} / {math.ceil(target / capacity / 0.7)}",
                ]
            )
    rows.append(
        [
            f"memory per million finished {k}-step invocations (measured x 10^6)",
            f"{per_invocation * 1e6 / 2**30:.2f} GiB journal keys + "
            f"{b['result'] * 1e6 / 2**30:.2f} GiB Celery result",
        ]
    )
    for target in TARGETS:
        kept = target / k * RETENTION
        rows.append(
            [
                f"  held at {target:,} steps/s ({k}-step invocations) for the default "
                f"retention of 1 day: {kept / 1e6:,.1f} M invocations (computed)",
                f"{per_invocation * kept / 2**30:,.0f} GiB",
            ]
        )
    print("4. The model")
    print(c.table(["figure", "value"], rows))
    c.write_json(
        args.json,
        {
            "machine": info,
            "script_costs": costs,
            "points": points,
            "memory": mem,
            "per_invocation_bytes": per_invocation,
            "pin": args.pin,
            "steps": k,
        },
    )


if __name__ == "__main__":
    main()
