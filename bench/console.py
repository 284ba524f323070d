"""The console's server time: the first page of the list with 100,000 invocations in Redis,
and the page of a 1,000-step journal (issue 19's two 300 ms figures).

``python -m bench.console [--invocations 100000] [--steps 1000] [--rounds 30]``

Fills a private redis-server (or ``--redis-url``, under a unique prefix) through the
store's own Lua scripts, pipelined: invocations created over the last 4 days, 3 steps
each, 97% completed, 2% failed, 0.5% paused, 0.5% running; and one invocation of
``--steps`` steps. Then serves the console with uvicorn in this process and requests
each page ``--rounds`` times over HTTP, after two warm-up requests. Server time is the
console's own ``Server-Timing`` header (from the request's arrival to the response's
start: the Redis reads and the rendering); the client's round trip is reported beside it.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx

from bench._common import (
    machine,
    median,
    parser,
    percentile,
    print_machine,
    redis_for,
    table,
    unique_prefix,
    write_json,
)

TASK = "bench.console.order"
#: Each filled invocation's steps: small values, as most journals hold.
STEPS = ("reserve", "charge", "ship")
RETENTION_MS = 30 * 86400 * 1000
SPREAD = 4 * 86400  # creation times over the last four days
BATCH = 500


def fill(url: str, prefix: str, count: int, steps: int) -> str:
    """Write ``count`` invocations and one of ``steps`` steps; return the big one's id."""
    import redis

    from celery_durable.keys import KeySpace
    from celery_durable.stores.redis import scripts

    client = redis.Redis.from_url(url)
    for script in scripts.ALL:
        client.script_load(script.source)
    keys = KeySpace(prefix)
    rand = random.Random(7)
    now = time.time()
    started = time.perf_counter()

    def start(task_ids: list[str], created: list[float]) -> list[str]:
        """Start the invocations in one pipeline; return the fence each took (fences start
        at Redis's clock in ms, so a writer must use the one its start handed out)."""
        pipe = client.pipeline(transaction=False)
        for task_id, at in zip(task_ids, created, strict=True):
            k = keys.invocation(task_id)
            call = f'{{"task":"{TASK}","args":["{task_id}"],"kwargs":{{}},"options":{{}}}}'
            pipe.evalsha(scripts.START.sha, 11, k.meta, k.journal, k.done,
                         *keys.indexes(task_id), keys.wakeups, k.tombstone,
                         keys.deadlines_of(task_id), k.call, task_id, TASK, "fp", "7",
                         f"{at:.6f}", 30000, "bench:1", 0, call, 0, 0, "")  # fmt: skip
        pipe.execute()
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(keys.invocation(task_id).meta, "fence")
        return [fence.decode() for fence in pipe.execute()]

    def append(pipe: Any, k: Any, fence: str, index: int, name: str, at: float, value: str) -> None:
        entry = (f'{{"k":"run","n":"{name}","t":{int(at * 1000)},"d":{rand.randint(200, 90000)},'
                 f'"s":"ok","v":{value}}}')  # fmt: skip
        pipe.evalsha(scripts.APPEND.sha, 2, k.meta, k.journal, fence, index, entry, "0")

    def finish(pipe: Any, task_id: str, fence: str, status: str, outcome: str, at: str) -> None:
        # As the store finishes them, less the packing of a completed one's steps (ARGV
        # 10-13 empty): its journal stays a list, which the console reads the same way.
        k, ix = keys.invocation(task_id), keys.indexes(task_id)
        pipe.evalsha(scripts.FINISH.sha, 10, k.meta, k.journal, k.done, *ix, keys.wakeups,
                     k.call, k.steps, task_id, fence, status, outcome, at, RETENTION_MS, 0,
                     "", RETENTION_MS, "", 0, "", "")  # fmt: skip

    for first in range(0, count, BATCH):
        numbers = range(first, min(first + BATCH, count))
        task_ids = [f"order-{n:07d}" for n in numbers]
        created = [now - SPREAD + SPREAD * n / count for n in numbers]
        fences = start(task_ids, created)
        pipe = client.pipeline(transaction=False)
        for task_id, at, fence in zip(task_ids, created, fences, strict=True):
            k, ix = keys.invocation(task_id), keys.indexes(task_id)
            for i, name in enumerate(STEPS):
                value = f'{{"order":"{task_id}","step":"{name}","ref":"{rand.getrandbits(48):x}"}}'
                append(pipe, k, fence, i, name, at + 0.01 * i, value)
            kind = rand.random()
            if kind < 0.005:
                continue  # running
            ended = f"{at + 1:.6f}"
            if kind < 0.01:
                why = "step 'charge' (index 1) gave up"
                pipe.evalsha(scripts.PAUSE.sha, 4, k.meta, ix.running, ix.paused, k.call,
                             task_id, fence, why, ended, "", "")  # fmt: skip
                continue
            status, outcome = "completed", '{"s":"ok","v":{"ok":true}}'
            if kind < 0.03:
                status, outcome = "failed", '{"s":"error","e":{"type":"ValueError","message":"no"}}'
            finish(pipe, task_id, fence, status, outcome, ended)
        pipe.execute()

    big = "journal-of-many-steps"
    [fence] = start([big], [now - 60])
    pipe = client.pipeline(transaction=False)
    k = keys.invocation(big)
    for i in range(steps):
        value = f'{{"i":{i},"sku":"SKU-{i:05d}","qty":{i % 7 + 1},"note":"line {i} of the order"}}'
        append(pipe, k, fence, i, f"step-{i}", now - 60 + 0.05 * i, value)
    finish(pipe, big, fence, "completed", '{"s":"ok","v":{"lines":1000}}', f"{now:.6f}")
    pipe.execute()
    memory = client.info("memory")["used_memory_human"]
    client.close()
    print(f"# filled {count:,} invocations and one of {steps:,} steps in "
          f"{time.perf_counter() - started:.1f} s; redis used_memory {memory}")  # fmt: skip
    return big


def serve(asgi: Any) -> tuple[str, Any]:
    import uvicorn

    from bench._common import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def measure(base: str, path: str, rounds: int) -> dict[str, Any]:
    server_ms, client_ms = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for n in range(rounds + 2):
            began = time.perf_counter()
            response = client.get(path)
            took = (time.perf_counter() - began) * 1000
            response.raise_for_status()
            if n < 2:
                continue  # warm-up: template compilation, connections
            timing = response.headers["server-timing"]
            server_ms.append(float(timing.split("dur=")[1]))
            client_ms.append(took)
    return {
        "path": path,
        "server_ms_median": median(server_ms),
        "server_ms_p90": percentile(server_ms, 90),
        "client_ms_median": median(client_ms),
        "bytes": len(response.content),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--invocations", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    prefix = unique_prefix("console")
    with redis_for(args, prefix) as url:
        print_machine(machine(url))
        big = fill(url, prefix, args.invocations, args.steps)
        from celery import Celery

        from celery_durable.web import create_app

        app = Celery("bench-console", broker=url, set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_key_prefix=prefix)
        base, server = serve(create_app(app))
        try:
            cases = [
                ("list, first page (50 of all)", "/"),
                ("list, first page, status=paused (its index)", "/?status=paused"),
                ("list, first page, status=failed (a scan)", "/?status=failed"),
                ("list, first page, task filter", f"/?task={TASK}"),
                ("list, live refresh fragment", "/?partial=1"),
                (f"invocation page, {args.steps:,} steps", f"/invocation?id={big}"),
                ("one of its steps, opened", f"/invocation/step?id={big}&index=500&partial=1"),
                (f"JSON API, {args.steps:,} steps", f"/api/invocation?id={big}"),
            ]
            results = []
            for label, path in cases:
                figures = measure(base, path, args.rounds)
                results.append({"case": label, **figures})
        finally:
            server.should_exit = True
    rows = [[r["case"], f"{r['server_ms_median']:.1f}", f"{r['server_ms_p90']:.1f}",
             f"{r['client_ms_median']:.1f}", f"{r['bytes']:,}"] for r in results]  # fmt: skip
    print(f"\n{args.invocations:,} invocations; medians of {args.rounds} requests, ms")
    print(table(["page", "server", "server p90", "client", "bytes"], rows))
    write_json(args.json, {"invocations": args.invocations, "steps": args.steps,
                           "rounds": args.rounds, "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
