"""Redis memory per journaled step, for a small payload.

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
from typing import Any

import _common as c
from celery import Celery

from celery_durable.codec import JsonCodec
from celery_durable.runtime import release_runtime, runtime_for

TARGET = 150
NAME = "reserve"
PAYLOADS: dict[str, Any] = {"int 7": 7, "str 10 bytes": "abcdefghij"}
CODEC: JsonCodec[Any] = JsonCodec()


def payload_size(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else len(json.dumps(value))


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    args = p.parse_args()
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
