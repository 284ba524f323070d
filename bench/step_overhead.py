"""Step overhead: one ``ctx.run`` of a no-op function, against one Redis round trip.

Inside one running invocation (``invocation.begin``, no Celery), each iteration times,
one after the other on the same redis-py client:

- ``PING``: the round-trip floor;
- ``ctx.run("step", noop)``: one journaled step (one EVALSHA of append.lua);
- the same EVALSHA of append.lua sent directly through redis-py, on another invocation:
  what the step costs without celery-durable's Python around it;
- an EVALSHA of a script that only returns, with the same arguments: the fixed cost of
  calling a script, without append.lua's five commands;
- ``PING`` and the same EVALSHA of append.lua again, packed once and sent on a connection
  held outside redis-py's pool (``send_packed_command`` + ``read_response``): the round
  trip without redis-py's per-command machinery (pool checkout, PID check, packing,
  retry wrapper), the floor for a client that holds its connection.

Each op is timed on its own; the figure is the median per op, per repetition, and the
median over repetitions. Then the same steps against ``MemoryJournalStore``: the pure
Python cost of the step path.

    /work/venv/bin/python bench/step_overhead.py [--steps 2000] [--repeats 7]
"""

from __future__ import annotations

import gc
import hashlib
import time
from importlib import resources
from typing import Any

import _common as c
from celery import Celery

from celery_durable.codec import JsonCodec
from celery_durable.context import DurableContext
from celery_durable.journal.entries import encode_entry
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.stores.memory import MemoryJournalStore

TARGET = 1.2
CODEC: JsonCodec[Any] = JsonCodec()
APPEND_LUA = resources.files("celery_durable.stores.redis").joinpath("lua/append.lua").read_text()
APPEND_SHA = hashlib.sha1(APPEND_LUA.encode()).hexdigest()
EMPTY_LUA = "return false"
EMPTY_SHA = hashlib.sha1(EMPTY_LUA.encode()).hexdigest()


def noop() -> None:
    return None


def begin(store: Any, task_id: str) -> DurableContext:
    ctx = c.begin(store, task_id, "bench.steps", CODEC)
    assert isinstance(ctx, DurableContext)
    return ctx


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def one_repeat(store: Any, prefix: str, rep: int, steps: int) -> dict[str, list[float]]:
    """Time ``steps`` iterations of PING, ctx.run and raw EVALSHAs, interleaved."""
    client = store.client
    ping = client.ping
    evalsha = client.evalsha
    ctx = begin(store, f"{prefix}-steps-{rep}")
    raw_id = f"{prefix}-raw-{rep}"
    raw_fence = begin(store, raw_id)._ex.fence  # creates the meta key the script checks
    raw_meta = f"{prefix}:{{{raw_id}}}:meta"
    raw_journal = f"{prefix}:{{{raw_id}}}:journal"
    held_id = f"{prefix}-held-{rep}"
    held_fence = begin(store, held_id)._ex.fence
    held_meta = f"{prefix}:{{{held_id}}}:meta".encode()
    held_journal = f"{prefix}:{{{held_id}}}:journal".encode()
    now = time.time()
    entry = encode_entry("run", "step", now, now, "json", "null")
    # A connection of the pool's kind, held: what a client without redis-py's
    # per-command machinery pays.
    conn = client.connection_pool.make_connection()
    conn.connect()
    send, read = conn.send_packed_command, conn.read_response
    ping_packed = b"*1\r\n$4\r\nPING\r\n"
    head = b"*9\r\n" + b"".join(
        bulk(part)
        for part in (
            b"EVALSHA",
            APPEND_SHA.encode(),
            b"2",
            held_meta,
            held_journal,
            b"%d" % held_fence,
        )
    )
    tail = bulk(entry.encode()) + bulk(b"0")
    clock = time.perf_counter
    pings, runs, raws, empties, held_pings, helds = [], [], [], [], [], []
    for i in range(steps):
        t0 = clock()
        ping()
        t1 = clock()
        ctx.run("step", noop)
        t2 = clock()
        evalsha(APPEND_SHA, 2, raw_meta, raw_journal, raw_fence, i, entry, "0")
        t3 = clock()
        evalsha(EMPTY_SHA, 2, raw_meta, raw_journal, raw_fence, i, entry, "0")
        t4 = clock()
        send([ping_packed], False)
        read()
        t5 = clock()
        send([b"".join((head, bulk(b"%d" % i), tail))], False)
        assert read() is None
        t6 = clock()
        pings.append(t1 - t0)
        runs.append(t2 - t1)
        raws.append(t3 - t2)
        empties.append(t4 - t3)
        held_pings.append(t5 - t4)
        helds.append(t6 - t5)
    conn.disconnect()
    c.finish(ctx)
    return {"ping": pings, "step": runs, "raw": raws, "empty": empties,
            "held_ping": held_pings, "held_append": helds}  # fmt: skip


def server_side(store: Any, prefix: str, n: int = 2000) -> dict[str, float]:
    """Microseconds each command spends inside Redis (INFO commandstats), one kind at a time."""
    client = store.client
    task_id = f"{prefix}-server"
    fence = begin(store, task_id)._ex.fence
    meta, journal = f"{prefix}:{{{task_id}}}:meta", f"{prefix}:{{{task_id}}}:journal"
    now = time.time()
    entry = encode_entry("run", "step", now, now, "json", "null")
    calls = {
        "ping": lambda i: client.ping(),
        "append.lua": lambda i: client.evalsha(APPEND_SHA, 2, meta, journal, fence, i, entry, "0"),
        "return false": lambda i: client.evalsha(EMPTY_SHA, 2, meta, journal, fence, i, entry, "0"),
    }
    out = {}
    for name, call in calls.items():
        client.config_resetstat()
        for i in range(n):
            call(i)
        stats = client.info("commandstats")
        command = "cmdstat_ping" if name == "ping" else "cmdstat_evalsha"
        out[name] = float(stats[command]["usec_per_call"])
    return out


def memory_repeat(steps: int, rep: int, ping: Any) -> dict[str, list[float]]:
    ctx = begin(MemoryJournalStore(), f"mem-{rep}")
    clock = time.perf_counter
    pings, runs = [], []
    for _ in range(steps):
        t0 = clock()
        ping()
        t1 = clock()
        ctx.run("step", noop)
        t2 = clock()
        pings.append(t1 - t0)
        runs.append(t2 - t1)
    c.finish(ctx)
    return {"ping": pings, "step": runs}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="steps per invocation")
    p.add_argument("--repeats", type=int, default=7, help="invocations (repetitions)")
    args = p.parse_args()
    prefix = c.unique_prefix("steps")

    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        app = Celery("bench-steps", set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_key_prefix=prefix)
        store = runtime_for(app).store
        store.client.script_load(APPEND_LUA)
        store.client.script_load(EMPTY_LUA)
        # Warm up: connection, scripts, code paths.
        one_repeat(store, prefix, -1, 200)
        memory_repeat(200, -1, store.client.ping)

        reps: list[dict[str, float]] = []
        for rep in range(args.repeats):
            gc.collect()
            real = one_repeat(store, prefix, rep, args.steps)
            mem = memory_repeat(args.steps, rep, store.client.ping)
            us = {
                "ping": c.median(real["ping"]) * 1e6,
                "step": c.median(real["step"]) * 1e6,
                "raw": c.median(real["raw"]) * 1e6,
                "empty": c.median(real["empty"]) * 1e6,
                "held_ping": c.median(real["held_ping"]) * 1e6,
                "held_append": c.median(real["held_append"]) * 1e6,
                "mem_ping": c.median(mem["ping"]) * 1e6,
                "mem_step": c.median(mem["step"]) * 1e6,
                "step_mean": sum(real["step"]) / len(real["step"]) * 1e6,
                "ping_mean": sum(real["ping"]) / len(real["ping"]) * 1e6,
            }
            us["ratio"] = us["step"] / us["ping"]
            us["raw_ratio"] = us["raw"] / us["ping"]
            us["empty_ratio"] = us["empty"] / us["ping"]
            us["held_ping_ratio"] = us["held_ping"] / us["ping"]
            us["step_held_ratio"] = us["step"] / us["held_ping"]
            us["held_append_ratio"] = us["held_append"] / us["held_ping"]
            us["mem_ratio"] = us["mem_step"] / us["mem_ping"]
            us["mean_ratio"] = us["step_mean"] / us["ping_mean"]
            reps.append(us)
            print(
                f"repeat {rep}: ping {us['ping']:.1f} us, step {us['step']:.1f} us "
                f"(x{us['ratio']:.2f}), raw evalsha {us['raw']:.1f} us (x{us['raw_ratio']:.2f}), "
                f"held PING {us['held_ping']:.1f} us, held evalsha {us['held_append']:.1f} us, "
                f"step / held PING x{us['step_held_ratio']:.2f}, "
                f"memory step {us['mem_step']:.2f} us"
            )
        server_us = server_side(store, prefix)
        release_runtime(app)

    def med(key: str) -> float:
        return c.median([r[key] for r in reps])

    def spread(key: str, fmt: str = ".1f") -> str:
        values = [r[key] for r in reps]
        return f"{min(values):{fmt}}-{max(values):{fmt}}"

    ratio = med("ratio")
    rows = [
        ["PING (round-trip floor)", f"{med('ping'):.1f}", spread("ping"), "1.00", ""],
        [
            "ctx.run no-op, Redis store",
            f"{med('step'):.1f}",
            spread("step"),
            f"{ratio:.2f}",
            f"<= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'}",
        ],
        [
            "raw EVALSHA append.lua (redis-py only)",
            f"{med('raw'):.1f}",
            spread("raw"),
            f"{med('raw_ratio'):.2f}",
            "",
        ],
        [
            "raw EVALSHA of 'return false'",
            f"{med('empty'):.1f}",
            spread("empty"),
            f"{med('empty_ratio'):.2f}",
            "",
        ],
        [
            "PING on a held connection, pre-packed",
            f"{med('held_ping'):.1f}",
            spread("held_ping"),
            f"{med('held_ping_ratio'):.2f}",
            "",
        ],
        [
            "EVALSHA append.lua on a held connection, pre-packed",
            f"{med('held_append'):.1f}",
            spread("held_append"),
            f"{med('held_append') / med('ping'):.2f}",
            f"x{med('held_append_ratio'):.2f} held PING",
        ],
        [
            "ctx.run no-op, memory store",
            f"{med('mem_step'):.2f}",
            spread("mem_step", ".2f"),
            f"{med('mem_step') / med('ping'):.2f}",
            "pure Python step path",
        ],
    ]
    print()
    print(
        f"Step overhead: {args.steps} steps per invocation, {args.repeats} repeats; "
        "median per op (us), spread of the per-repeat medians, ratio to PING in the same run"
    )
    print(c.table(["op", "median us", "range us", "x PING", "target"], rows))
    print(
        f"ratio of means (step/PING): {med('mean_ratio'):.2f}; step / held PING: "
        f"{med('step_held_ratio'):.2f}; celery-durable's Python around the EVALSHA: "
        f"{med('step') - med('raw'):.1f} us (redis-py's), {med('step') - med('held_append'):.1f} "
        "us (held connection's)"
    )
    print(
        "inside Redis (INFO commandstats usec_per_call): "
        + ", ".join(f"{name} {us:.2f} us" for name, us in server_us.items())
    )
    c.write_json(
        args.json,
        {
            "machine": info,
            "steps": args.steps,
            "repeats": reps,
            "ratio": ratio,
            "target": TARGET,
            "server_usec_per_call": server_us,
        },
    )


if __name__ == "__main__":
    main()
