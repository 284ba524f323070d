"""Redis memory per journaled step, and per finished invocation.

Two figures. The default one, memory per journaled step, is below. ``--finished`` gives
the other: bytes per *finished* invocation, run by a real worker.

**Finished invocations** (``--finished``): the worker subprocess (prefork, 2 processes)
takes its broker and Celery's result backend from one private redis-server and keeps its
journals on a second one, so that the second's ``INFO memory used_memory`` moves with
celery-durable's keys only (Celery's result backend is left out). For each cell (steps:
1, 10, 100; step values: 10 B, 1 KiB, 100 KiB of text; with the journal kept, and with
``durable_journal_retention=0``, ``bench.values_no_journal``), ``--invocations`` tasks run
(fewer for the large cells: at most ~``--budget`` bytes of step values per cell); the
figure is the growth of ``used_memory`` from before they are sent to after they all
finished, per invocation: every key, its TTL entry, the listing index's entries. Next to
it, the median ``MEMORY USAGE`` of each key of an invocation.

    .venv/bin/python bench/memory.py --finished [--invocations 1000] [--json OUT]

Steps return one letter repeated, which zlib compresses about 100 times (a completed
invocation's journal is packed at finish); ``--random-values`` makes them random base64
text, which it barely compresses: real values lie between the two.

One invocation per (payload, N) is journaled through the library with N steps named
``reserve`` that return the payload. Per step: ``MEMORY USAGE <journal> SAMPLES 0`` / N,
and the growth of ``INFO memory used_memory`` over the whole execution (journal, meta
hash, index entry) / N. The overhead is that minus the payload's own size (an int's
digits, or the 10 bytes of a 10-character string; its JSON quotes count as overhead).

Run it on a private redis-server (the default): ``used_memory`` on a shared Redis
moves with everybody's keys.

    /work/venv/bin/python bench/memory.py [--sizes 1000 10000]
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

import _common as c
import redis
from celery import Celery

from celery_durable.codec import JsonCodec
from celery_durable.runtime import release_runtime, runtime_for

TARGET = 150
NAME = "reserve"
PAYLOADS: dict[str, Any] = {"int 7": 7, "str 10 bytes": "abcdefghij"}
CODEC: JsonCodec[Any] = JsonCodec()


def payload_size(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else len(json.dumps(value))


STEPS = (1, 10, 100)
VALUE_SIZES = {"10 B": 10, "1 KiB": 1024, "100 KiB": 100 * 1024}
#: The goals of issue 21, for 10 steps of small values: with the journal, and without.
GOALS = {True: 1200, False: 300}


def finished_cell(
    app: Any, journal: Any, prefix: str, steps: int, size: int, keep: bool, count: int
) -> dict[str, Any]:
    """Run ``count`` invocations of ``steps`` steps of ``size`` bytes; measure."""
    task = app.tasks["bench.values" if keep else "bench.values_no_journal"]
    before = journal.info("memory")["used_memory"]
    results = [task.apply_async((steps, size)) for _ in range(count)]
    values = [r.get(timeout=600) for r in results]
    assert values == [steps * size] * count, values[:3]
    time.sleep(0.3)
    after = journal.info("memory")["used_memory"]
    durable = "durable"  # the journal's Redis is the bench's own: the default prefix
    parts: dict[str, list[int]] = {}
    for r in results[:50]:
        for key in journal.scan_iter(f"{durable}:{{{r.id}}}:*"):
            part = key.rsplit(":", 1)[1]
            parts.setdefault(part, []).append(int(journal.memory_usage(key, samples=0) or 0))
            assert journal.pttl(key) > 0, f"{key} has no TTL"
    return {
        "ids": [r.id for r in results[:2]],
        "steps": steps,
        "value_bytes": size,
        "journal_kept": keep,
        "invocations": count,
        "per_invocation": (after - before) / count,
        "memory_usage": {part: c.median(sizes) for part, sizes in sorted(parts.items())},
    }


def finished(args: Any) -> None:
    from bench.celery_app import configure
    from celery_durable.keys import KeySpace, MetaField
    from celery_durable.stores.redis import RedisJournalStore

    prefix = c.unique_prefix("finished")
    data = tempfile.mkdtemp(prefix="bench-memory-")
    rows, cells, cells_ids = [], [], []
    first_kept: str | None = None
    with c.private_redis("--dir", data) as broker, c.private_redis("--dir", data) as url:
        info = c.machine(url)
        c.print_machine(info)
        app = configure(broker, prefix, c.Worker.queue_of(prefix), journal_url=url)
        journal = redis.Redis.from_url(url, decode_responses=True)
        worker = c.Worker(broker, prefix, "--pool=prefork", "-c", "2")
        worker.env["BENCH_JOURNAL_URL"] = url
        if args.random_values:
            worker.env["BENCH_RANDOM_VALUES"] = "1"
        with worker:
            worker.wait_ready(app.tasks["bench.plain"])
            for keep in (True, False):  # warm-up: scripts loaded, indexes exist
                name = "bench.values" if keep else "bench.values_no_journal"
                [r.get(timeout=60) for r in [app.tasks[name].delay(2, 10) for _ in range(20)]]
            for steps in args.steps:
                for label, size in VALUE_SIZES.items():
                    if label not in args.values:
                        continue
                    for keep in (True, False):
                        count = max(5, min(args.invocations, args.budget // (steps * size)))
                        cell = finished_cell(app, journal, prefix, steps, size, keep, count)
                        cells.append(cell)
                        cells_ids.append(cell["ids"][0])
                        if keep and first_kept is None:
                            first_kept = cell["ids"][0]
                        goal = GOALS[keep] if (steps, size) == (10, 10) else None
                        rows.append([
                            steps, label, "kept" if keep else "dropped (0)", count,
                            f"{cell['per_invocation']:,.0f}",
                            ", ".join(f"{k} {v:,.0f}" for k, v in cell["memory_usage"].items()),
                            "" if goal is None else
                            f"<= {goal:,}: {'met' if cell['per_invocation'] <= goal else 'MISSED'}",
                        ])  # fmt: skip
                        print(" | ".join(map(str, rows[-1])), flush=True)
        last = cells_ids[-1]
        meta = journal.hgetall(f"durable:{{{last}}}:meta")
        # Read through the store: a completed invocation's journal and call may be packed.
        store = RedisJournalStore.from_url(url, KeySpace("durable"))
        kept_meta, kept_entries, _ = store.read(str(first_kept)) or ({}, [""], {})
        store.close()
        samples = {"entry": kept_entries[0], "call": kept_meta.get(MetaField.CALL)}
        journal.close()
        app.close()
    print()
    print("Bytes of Redis per finished invocation (used_memory growth / invocations)")
    print(
        c.table(
            ["steps", "step value", "journal", "invocations", "B per invocation",
             "MEMORY USAGE per key (median)", "goal"],
            rows,
        )
    )  # fmt: skip
    print(f"a finished meta hash: {meta}")
    for name, text in samples.items():
        print(f"a step's journal entry, and the call ({name}, {len(text or '')} B): {text}")
    c.write_json(args.json, {"machine": info, "finished": cells, "meta_sample": meta, **samples})


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    p.add_argument("--finished", action="store_true", help="bytes per finished invocation")
    p.add_argument("--invocations", type=int, default=1000, help="per cell, with --finished")
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="with --finished")
    p.add_argument("--values", nargs="+", default=list(VALUE_SIZES), help="with --finished")
    p.add_argument("--budget", type=int, default=20_000_000, help="step value bytes per cell")
    p.add_argument(
        "--random-values", action="store_true",
        help="with --finished: steps return random base64 text, not one letter repeated",
    )  # fmt: skip
    args = p.parse_args()
    if args.finished:
        finished(args)
        return
    prefix = c.unique_prefix("memory")
    if args.redis_url:
        print("# warning: used_memory on a shared Redis is noisy; MEMORY USAGE is not")

    results = []
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        app = Celery("bench-memory", set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_key_prefix=prefix)
        store = runtime_for(app).store
        client = store.client
        # Warm-up: the index key, script cache and connection buffers exist before we measure.
        warm = c.begin(store, f"{prefix}-warm-up", "bench.memory", CODEC)
        for _ in range(100):
            warm.run(NAME, lambda: 0)
        c.finish(warm)
        listpack = client.config_get("list-max-listpack-size")["list-max-listpack-size"]
        for label, payload in PAYLOADS.items():
            for n in args.sizes:
                task_id = f"{prefix}-{label.replace(' ', '-')}-{n}"
                before = client.info("memory")["used_memory"]
                ctx = c.begin(store, task_id, "bench.memory", CODEC)
                for _ in range(n):
                    ctx.run(NAME, lambda v=payload: v)
                c.finish(ctx)
                after = client.info("memory")["used_memory"]
                journal = f"{prefix}:{{{task_id}}}:journal"
                meta = f"{prefix}:{{{task_id}}}:meta"
                usage = client.memory_usage(journal, samples=0)
                meta_usage = client.memory_usage(meta, samples=0)
                entries = client.lrange(journal, 0, -1)
                text = sum(len(e.encode()) for e in entries) / n
                size = payload_size(payload)
                results.append(
                    {
                        "payload": label,
                        "n": n,
                        "payload_bytes": size,
                        "journal_bytes": usage,
                        "meta_bytes": meta_usage,
                        "per_step": usage / n,
                        "overhead": usage / n - size,
                        "used_memory_per_step": (after - before) / n,
                        "entry_text": text,
                        "encoding": client.object("encoding", journal),
                        "sample": entries[0],
                    }
                )
                r = results[-1]
                print(
                    f"{label}, N={n}: journal {usage} B ({r['encoding']}), meta {meta_usage} B, "
                    f"{r['per_step']:.1f} B/step, used_memory {r['used_memory_per_step']:.1f} "
                    f"B/step, entry text {text:.1f} B"
                )
        release_runtime(app)

    print()
    print(f"sample entry ({len(results[0]['sample'])} B): {results[0]['sample']}")
    print(
        f"Memory per journaled step (step name {NAME!r}, {len(NAME)} B; "
        f"list-max-listpack-size {listpack})"
    )
    rows = [
        [
            r["payload"],
            f"{r['n']:,}",
            f"{r['per_step']:.1f}",
            f"{r['used_memory_per_step']:.1f}",
            f"{r['entry_text']:.1f}",
            r["payload_bytes"],
            f"{r['overhead']:.1f}",
            "met" if r["overhead"] <= TARGET else "MISSED",
        ]
        for r in results
    ]
    print(
        c.table(
            ["payload", "N", "MEMORY USAGE B/step", "used_memory B/step", "entry JSON B",
             "payload B", "overhead B/step", f"<= {TARGET} + payload"],
            rows,
        )
    )  # fmt: skip
    c.write_json(args.json, {"machine": info, "results": results, "target": TARGET})


if __name__ == "__main__":
    main()
