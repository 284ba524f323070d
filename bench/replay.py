"""Replay: how long an execution takes to replay N journaled steps, in how many round trips.

For N in 10, 100, 1,000 and 10,000, one invocation is journaled with N steps (through
the library, against the real Redis store) and left running. Each replay is a new
execution of it: ``invocation.begin`` (the one round trip that loads the journal) and
N ``ctx.run`` calls that all return recorded values, up to the first new step, which is
not taken. Timed ``--repeats`` times each; the figure is the median. The memory store
gives the same replay without Redis (the pure Python part).

Round trips are counted on one extra replay per N, two ways: on the client, every
``send_packed_command`` of redis-py (one per request, a pipeline included); and on the
server, with MONITOR, every command from a client (commands run by Lua are listed apart).

    /work/venv/bin/python bench/replay.py [--sizes 10 100 1000 10000] [--repeats 9]
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import _common as c
from celery import Celery
from redis.connection import AbstractConnection

from celery_durable.codec import JsonCodec
from celery_durable.context import DurableContext
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.store import StartRequest
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.stores.memory import MemoryJournalStore

TARGET_MS = 100.0
TASK = "bench.replay"
CODEC: JsonCodec[Any] = JsonCodec()


def value(i: int) -> int:
    return i


def must_not_run(i: int) -> int:
    raise AssertionError(f"step {i} ran during replay")


def journal(store: Any, task_id: str, n: int) -> None:
    ctx = c.begin(store, task_id, TASK, CODEC)
    assert isinstance(ctx, DurableContext)
    for i in range(n):
        ctx.run("step", value, i)
    c.finish(ctx)


def replay(store: Any, task_id: str, n: int) -> tuple[float, float]:
    """One execution that replays ``n`` steps; return (begin, whole) in seconds.

    Its lease is released afterwards, outside what is timed and counted."""
    ctx, begun, whole = replay_only(store, task_id, n)
    c.finish(ctx)
    return begun, whole


def replay_only(store: Any, task_id: str, n: int) -> tuple[Any, float, float]:
    """Begin and replay ``n`` steps; return the context, and (begin, whole) in seconds."""
    clock = time.perf_counter
    t0 = clock()
    ctx = c.begin(store, task_id, TASK, CODEC)
    t1 = clock()
    assert isinstance(ctx, DurableContext)
    run = ctx.run
    for i in range(n):
        run("step", must_not_run, i)
    t2 = clock()
    assert not ctx.is_replaying
    return ctx, t1 - t0, t2 - t0


def count_round_trips(store: Any, url: str, task_id: str, n: int) -> dict[str, Any]:
    sends = 0
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        original(self, command, check_health)

    with c.Monitor(url) as monitor:
        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            ctx, _, _ = replay_only(store, task_id, n)
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    c.finish(ctx)
    client_cmds = [m["command"].split(" ", 1)[0].upper() for m in monitor.commands
                   if m["client_type"] != "lua"]  # fmt: skip
    lua_cmds = [m["command"].split(" ", 1)[0].upper() for m in monitor.commands
                if m["client_type"] == "lua"]  # fmt: skip
    return {
        "client_sends": sends,
        "server_commands": dict(Counter(client_cmds)),
        "lua_commands": dict(Counter(lua_cmds)),
    }


def journal_loading(store: Any, prefix: str, task_id: str, repeats: int) -> dict[str, float]:
    """The start script against a plain LRANGE of the same journal: client ms, Redis us."""
    client = store.client
    journal = f"{prefix}:{{{task_id}}}:journal"
    request = StartRequest(TASK, fingerprint((), {}), 1, 0.001, "bench:1")
    calls = {
        # A lease of a millisecond: each start takes over from the one before.
        "start": lambda: store.start(task_id, request),
        "lrange": lambda: client.lrange(journal, 0, -1),
    }
    out = {}
    for name, call in calls.items():
        client.config_resetstat()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        stats = client.info("commandstats")
        command = "cmdstat_evalsha" if name == "start" else "cmdstat_lrange"
        out[f"{name}_ms"] = c.median(times) * 1e3
        out[f"{name}_server_us"] = float(stats[command]["usec_per_call"])
    return out


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10_000])
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    prefix = c.unique_prefix("replay")

    results: dict[int, dict[str, Any]] = {}
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        app = Celery("bench-replay", set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_key_prefix=prefix)
        store = runtime_for(app).store
        memory = MemoryJournalStore()
        for n in args.sizes:
            task_id = f"{prefix}-{n}"
            t0 = time.perf_counter()
            journal(store, task_id, n)
            journal(memory, task_id, n)
            built = time.perf_counter() - t0
            # Warm-up. No gc.collect() between repeats: it leaves the caches cold and makes
            # the next begin several times slower than in a worker, which is not the case.
            replay(store, task_id, n)
            replay(memory, task_id, n)
            begins, wholes, mems = [], [], []
            for _ in range(args.repeats):
                b, w = replay(store, task_id, n)
                begins.append(b)
                wholes.append(w)
                mems.append(replay(memory, task_id, n)[1])
            trips = count_round_trips(store, url, task_id, n)
            loading = journal_loading(store, prefix, task_id, args.repeats)
            entry_bytes = store.client.memory_usage(f"{prefix}:{{{task_id}}}:journal", samples=0)
            results[n] = {
                "replay_ms": c.median(wholes) * 1e3,
                "replay_ms_range": (min(wholes) * 1e3, max(wholes) * 1e3),
                "begin_ms": c.median(begins) * 1e3,
                "memory_store_ms": c.median(mems) * 1e3,
                "journal_bytes": entry_bytes,
                "journal_built_s": built,
                **trips,
                **loading,
            }
            r = results[n]
            print(
                f"N={n}: replay {r['replay_ms']:.2f} ms (begin {r['begin_ms']:.2f} ms), "
                f"memory store {r['memory_store_ms']:.2f} ms, client requests "
                f"{r['client_sends']}, server commands {r['server_commands']}, "
                f"store.start {r['start_ms']:.2f} ms ({r['start_server_us']:.0f} us in Redis) "
                f"vs LRANGE {r['lrange_ms']:.2f} ms ({r['lrange_server_us']:.0f} us), "
                f"inside Lua {r['lua_commands']}"
            )
        release_runtime(app)

    rows = []
    for n, r in results.items():
        per_step = (r["replay_ms"] - r["begin_ms"]) * 1e3 / n
        cmds = ", ".join(f"{k} x{v}" for k, v in sorted(r["server_commands"].items()))
        rows.append(
            [
                f"{n:,}",
                f"{r['replay_ms']:.2f}",
                "{:.2f}-{:.2f}".format(*r["replay_ms_range"]),
                f"{r['begin_ms']:.2f}",
                f"{per_step:.2f}",
                f"{r['memory_store_ms']:.2f}",
                r["client_sends"],
                cmds,
                f"{r['start_ms']:.2f} / {r['start_server_us'] / 1e3:.2f}",
                f"{r['lrange_ms']:.2f} / {r['lrange_server_us'] / 1e3:.2f}",
            ]
        )
    print()
    print(
        f"Replay of N journaled steps up to the first new one ({args.repeats} repeats, median); "
        "begin = the round trip that loads the journal"
    )
    print(
        c.table(
            ["N", "replay ms", "range ms", "of which begin ms", "us/replayed step",
             "memory store ms", "round trips", "commands Redis received",
             "start.lua ms (client / in Redis)", "plain LRANGE ms (client / in Redis)"],
            rows,
        )
    )  # fmt: skip
    biggest = max(results)
    ok_trips = all(r["client_sends"] == 1 for r in results.values())
    ok_time = results[biggest]["replay_ms"] < TARGET_MS
    print(
        f"targets: one round trip whatever N: {'met' if ok_trips else 'MISSED'}; "
        f"N={biggest:,} well under {TARGET_MS:.0f} ms: "
        f"{results[biggest]['replay_ms']:.1f} ms, {'met' if ok_time else 'MISSED'}"
    )
    c.write_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
