"""What flow control costs: a concurrency key's admission per invocation, and a cancel.

On one private Redis (or ``--redis-url``), with A and B interleaved op by op in the same
run, so that the machine's noise falls on both alike:

- ``admission``: one ``apply()`` of a task under a new task id, its journal in Redis
  (``durable_eager_journal = "redis"``): ``bench.unkeyed`` vs ``bench.keyed``, the same
  task with ``durable_concurrency_key`` (every invocation its own key: the admission of
  an invocation that finds a slot free, taken before its body and given back after its
  finish). 1 step and 10 steps. Median µs per invocation, and keyed / unkeyed.
- ``drain``: the same two tasks through a worker subprocess (solo pool): ``--tasks``
  invocations of 10 steps sent at once, seconds until the worker has drained them;
  keyed / unkeyed, alternating runs.
- ``append``: the step's write, ``append.lua`` as it was before the cancel mark (an
  ``HMGET`` of fence and status) vs as it is (fence, status and the mark, which rides on
  the reply): median µs per ``EVALSHA``, on a journal that grows as a real one does.
- ``cancel``: ``cancel_invocation()`` of a suspended invocation, on the operator's side
  (mark, wake, read its journal for children), with no child and with 3 suspended
  children; median µs per call, and its round trips to Redis (counted once, with
  MONITOR: commands that clients send, a MULTI ... EXEC as one).
- ``cancel to cancelled``: a sleeping invocation on the worker, cancelled: seconds until
  its journal says ``cancelled`` (the wake-up, a delivery, a replay, the cancel raised
  and journaled, the finish). Median over ``--cancels``.

    .venv/bin/python bench/flow_control.py [--ops 1000] [--repeats 5] [--tasks 200] \\
        [--cancels 20] [--json PATH]
"""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

import _common as c
import celery_app
import redis
from celery import Celery

from celery_durable import DurableTask, cancel_invocation, get_invocation
from celery_durable.journal.store import StartRequest
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.stores.redis import scripts

#: ``append.lua`` before the cancel mark: what a step's write cost then.
APPEND_BEFORE = """
local meta, journal = KEYS[1], KEYS[2]
local f = redis.call('HMGET', meta, 'fence', 'status')
if f[1] ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
if f[2] ~= 'running' then
  return redis.error_reply('NOTRUNNING')
end
local n = redis.call('LLEN', journal)
local i = tonumber(ARGV[2])
if n == i then
  redis.call('RPUSH', journal, ARGV[3])
  if ARGV[4] == '1' then
    redis.call('HDEL', meta, 'attempt', 'guard')
  end
  return false
end
if n > i then
  return redis.call('LINDEX', journal, i)
end
return redis.error_reply('GAP')
"""
ENTRY = '{"k":"run","n":"step-%d","t":1700000000000,"d":12,"s":"ok","v":%d}'
CALL_ENTRY = '{"k":"call","n":"child","t":0,"d":0,"s":"ok","v":{"id":"%s","task":"t"}}'


def eager_app(url: str, prefix: str) -> Celery:
    """An app of its own for ``apply()``, with the worker's two tasks (``celery_app``)."""
    app = Celery("bench-flow", broker="memory://", set_as_current=False)
    app.conf.update(
        durable_redis_url=url, durable_key_prefix=prefix, durable_eager_journal="redis",
        durable_eviction_check="ignore",
    )  # fmt: skip
    for name, key in (("flow.keyed", lambda n, key: key), ("flow.unkeyed", None)):
        app.task(base=DurableTask, bind=True, name=name, shared=False, durable_concurrency_key=key)(
            _body
        )
    return app


def _body(self: DurableTask, n: int, key: str) -> int:
    """The body of ``celery_app``'s ``bench.keyed`` and ``bench.unkeyed``."""
    run = self.ctx.run
    return sum(run(celery_app.STEP_NAMES[i], celery_app.step, i) for i in range(n))


def admission(app: Celery, steps: int, ops: int) -> dict[str, float]:
    keyed, unkeyed = app.tasks["flow.keyed"], app.tasks["flow.unkeyed"]
    times: dict[str, list[float]] = {"unkeyed": [], "keyed": []}
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(ops):
            key = f"acct-{i}"
            t0 = clock()
            unkeyed.apply((steps, key), task_id=f"u-{uuid.uuid4().hex}")
            t1 = clock()
            keyed.apply((steps, key), task_id=f"k-{uuid.uuid4().hex}")
            t2 = clock()
            times["unkeyed"].append(t1 - t0)
            times["keyed"].append(t2 - t1)
    finally:
        gc.enable()
    return {name: c.median(values) * 1e6 for name, values in times.items()}


def append_costs(url: str, prefix: str, ops: int) -> dict[str, float]:
    client = redis.Redis.from_url(url, decode_responses=True)
    before = client.script_load(APPEND_BEFORE)
    now = client.script_load(scripts.APPEND.source)
    times: dict[str, list[float]] = {"before": [], "now": []}
    clock = time.perf_counter
    metas = {name: f"{prefix}:{{{name}}}:meta" for name in times}
    for meta in metas.values():
        client.hset(meta, mapping={"fence": 7, "status": "running"})
    try:
        for i in range(ops):
            for name, sha in (("before", before), ("now", now)):
                meta = metas[name]
                journal = meta.replace(":meta", ":journal")
                t0 = clock()
                client.evalsha(sha, 2, meta, journal, 7, i, ENTRY % (i, i), 0)
                times[name].append(clock() - t0)
    finally:
        client.close()
    return {name: c.median(values) * 1e6 for name, values in times.items()}


def suspended(app: Celery, task_id: str, children: int) -> None:
    """An invocation suspended on a timer an hour away, with ``children`` suspended children."""
    store = runtime_for(app).store
    started = store.start(task_id, StartRequest("bench.nap", "fp", 1, 30.0, "bench:1"))
    for index in range(children):
        child = f"{task_id}/{index}"
        store.append(task_id, started.fence, index, CALL_ENTRY % child, False)
        suspended(app, child, 0)
    store.suspend(task_id, started.fence, "[]", [], time.time() + 3600, "")


def cancel_costs(app: Celery, ops: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"no child": [], "3 children": []}
    clock = time.perf_counter
    for _ in range(ops):
        for name, children in (("no child", 0), ("3 children", 3)):
            task_id = f"c-{uuid.uuid4().hex}"
            suspended(app, task_id, children)
            t0 = clock()
            cancel_invocation(app, task_id)
            times[name].append(clock() - t0)
    return {name: c.median(values) * 1e6 for name, values in times.items()}


def round_trips(url: str, what: Any) -> int:
    """Round trips to Redis that ``what`` makes: commands sent by clients (not those a
    script runs), a MULTI ... EXEC counted once."""
    with c.Monitor(url) as monitor:
        what()
    trips, queued = 0, False
    for command in monitor.commands:
        if command.get("client_type") == "lua":
            continue
        name = str(command["command"]).split(" ", 1)[0].upper()
        if name == "MULTI":
            queued = True
        elif name == "EXEC":
            queued = False
        if not queued:
            trips += 1
    return trips


def drain(app: Celery, name: str, tasks: int) -> float:
    task = app.tasks[name]
    began = time.perf_counter()
    results = [task.apply_async((10, f"acct-{i}")) for i in range(tasks)]
    for result in results:
        result.get(timeout=300)
    return time.perf_counter() - began


def cancel_to_cancelled(app: Celery, count: int) -> list[float]:
    nap = app.tasks["bench.nap"]
    took = []
    for _ in range(count):
        result = nap.apply_async((3600,))
        while (inv := get_invocation(app, result.id)) is None or inv.status != "suspended":
            time.sleep(0.01)
        t0 = time.perf_counter()
        cancel_invocation(app, result.id)
        while (inv := get_invocation(app, result.id)) is None or inv.status != "cancelled":
            time.sleep(0.005)
        took.append(time.perf_counter() - t0)
    return took


def main() -> None:
    p = c.parser(__doc__ or "")
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--cancels", type=int, default=20)
    args = p.parse_args()
    prefix = c.unique_prefix("flow")
    out: dict[str, Any] = {"package": c.package_version()}
    with c.redis_for(args, prefix) as url:
        info = out["machine"] = c.machine(url)
        c.print_machine(info)

        app = eager_app(url, prefix)
        admission(app, 1, 100)  # warm up: connections, scripts
        rows = []
        for steps in (1, 10):
            runs = [admission(app, steps, args.ops) for _ in range(args.repeats)]
            figures = {k: c.median([run[k] for run in runs]) for k in runs[0]}
            out[f"admission_{steps}"] = {"figures": figures, "runs": runs}
            rows.append([f"{steps} step(s)", f"{figures['unkeyed']:.0f}", f"{figures['keyed']:.0f}",
                         f"{figures['keyed'] / figures['unkeyed']:.2f}",
                         ", ".join(f"{r['keyed'] / r['unkeyed']:.2f}" for r in runs)])  # fmt: skip
        trips = {
            name: round_trips(url, lambda name=name: app.tasks[name].apply(
                (1, "acct-x"), task_id=f"m-{uuid.uuid4().hex}"))
            for name in ("flow.unkeyed", "flow.keyed")
        }  # fmt: skip
        out["admission_round_trips"] = trips
        print("\n## admission: apply() per invocation, median µs\n")
        print(c.table(["task", "unkeyed", "keyed", "keyed / unkeyed", "per repeat"], rows))
        print(f"\nRound trips to Redis per 1-step invocation: unkeyed {trips['flow.unkeyed']}, "
              f"keyed {trips['flow.keyed']}")  # fmt: skip

        appends = [append_costs(url, f"{prefix}:a{r}", args.ops) for r in range(args.repeats)]
        figures = {k: c.median([run[k] for run in appends]) for k in appends[0]}
        out["append"] = {"figures": figures, "runs": appends}
        print("\n## append.lua per step, median µs\n")
        print(c.table(["before the mark", "with the mark", "ratio"],
                      [[f"{figures['before']:.1f}", f"{figures['now']:.1f}",
                        f"{figures['now'] / figures['before']:.2f}"]]))  # fmt: skip

        cancels = [cancel_costs(app, max(50, args.ops // 10)) for _ in range(args.repeats)]
        figures = {k: c.median([run[k] for run in cancels]) for k in cancels[0]}
        trips_cancel = {}
        for name, children in (("no child", 0), ("3 children", 3)):
            task_id = f"m-{uuid.uuid4().hex}"
            suspended(app, task_id, children)
            trips_cancel[name] = round_trips(url, lambda t=task_id: cancel_invocation(app, t))
        out["cancel"] = {"figures": figures, "runs": cancels, "round_trips": trips_cancel}
        print("\n## cancel_invocation() of a suspended invocation\n")
        print(c.table(["", "median µs", "round trips"],
                      [[k, f"{v:.0f}", trips_cancel[k]] for k, v in figures.items()]))  # fmt: skip
        release_runtime(app)

        worker_prefix = c.unique_prefix("flow-worker")
        app = celery_app.configure(url, worker_prefix, c.Worker.queue_of(worker_prefix))
        with c.Worker(url, worker_prefix, "--pool=solo") as worker:
            worker.wait_ready(app.tasks["bench.plain"])
            drain(app, "bench.unkeyed", 20)  # warm up
            drains: dict[str, list[float]] = {"bench.unkeyed": [], "bench.keyed": []}
            for _ in range(args.repeats):
                for name in drains:
                    drains[name].append(drain(app, name, args.tasks))
            took = cancel_to_cancelled(app, args.cancels)
        medians = {name: c.median(values) for name, values in drains.items()}
        out["drain"] = {"tasks": args.tasks, "seconds": drains, "medians": medians}
        out["cancel_to_cancelled"] = took
        ratio = medians["bench.keyed"] / medians["bench.unkeyed"]
        print(f"\n## drain of {args.tasks} invocations of 10 steps, solo worker, seconds\n")
        pairs = zip(drains["bench.keyed"], drains["bench.unkeyed"], strict=True)
        each = ", ".join(f"{k / u:.2f}" for k, u in pairs)
        print(c.table(["unkeyed", "keyed", "keyed / unkeyed", "per repeat"],
                      [[f"{medians['bench.unkeyed']:.2f}", f"{medians['bench.keyed']:.2f}",
                        f"{ratio:.2f}", each]]))  # fmt: skip
        print(
            f"\n## cancel to cancelled, a sleeping invocation on the worker: median "
            f"{c.median(took):.3f} s, p90 {c.percentile(took, 90):.3f} s over {len(took)}"
        )
        release_runtime(app)
    c.write_json(args.json, out)


if __name__ == "__main__":
    main()
