"""What the append script costs, against variants of it and plain commands.

Interleaved on one redis-py client, each iteration sends: PING, ECHO of a journal entry,
RPUSH of it, EVALSHA of a script that only returns, EVALSHA of append.lua as the package
ships it (fence check, LLEN, RPUSH), and EVALSHA of a lean variant (the same without the
fence check: LLEN + RPUSH; EXISTS only when it must tell GONE from a gap). Then each
one alone, for its time inside Redis (INFO commandstats).
For the package owner weighing a cheaper append; the package does not use the variant.

    /work/venv/bin/python bench/append_variants.py [--ops 2000] [--repeats 5]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import _common as c
import redis

from celery_durable.stores.redis import scripts

APPEND = scripts.APPEND.source  # as the store sends it: after lua/_fenced.lua
LEAN = """
local n = redis.call('LLEN', KEYS[2])
local i = tonumber(ARGV[2])
if n == i and (i > 0 or redis.call('EXISTS', KEYS[1]) == 1) then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  return false
end
if n > i then return redis.call('LINDEX', KEYS[2], i) end
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('GONE') end
return redis.error_reply('GAP')
"""
ENTRY = '{"k":"run","n":"step","t0":1763726400.123456,"t1":1763726400.123466,"s":"ok","v":null}'


def operations(client: redis.Redis, prefix: str, rep: int) -> dict[str, Callable[[int], Any]]:
    shas = {name: client.script_load(src) for name, src in
            {"empty": "return false", "append": APPEND, "lean": LEAN}.items()}  # fmt: skip
    meta = f"{prefix}:m{rep}"
    client.hset(meta, mapping={"task": "t", "status": "running", "updated_at": "0", "fence": "1"})

    def script(name: str) -> Callable[[int], Any]:
        # append.lua's arguments: the fence, the index, the entry, the ends-attempts flag.
        sha, journal = shas[name], f"{prefix}:j{rep}-{name}"
        return lambda i: client.evalsha(sha, 2, meta, journal, "1", i, ENTRY, "0")

    return {
        "PING": lambda i: client.ping(),
        "ECHO <entry>": lambda i: client.echo(ENTRY),
        "RPUSH <entry>": lambda i: client.rpush(f"{prefix}:j{rep}-rpush", ENTRY),
        "EVALSHA 'return false'": script("empty"),
        "EVALSHA append.lua": script("append"),
        "EVALSHA lean append": script("lean"),
    }


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    prefix = c.unique_prefix("append")
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        client = redis.Redis.from_url(url, decode_responses=True)
        clock = time.perf_counter
        medians: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            ops = operations(client, prefix, rep)
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for i in range(args.ops):
                for name, op in ops.items():
                    t0 = clock()
                    op(i)
                    samples[name].append(clock() - t0)
            for name, xs in samples.items():
                medians.setdefault(name, []).append(c.median(xs) * 1e6)
        server: dict[str, float] = {}
        for name, op in operations(client, prefix, args.repeats).items():
            client.config_resetstat()
            for i in range(args.ops):
                op(i)
            stats = client.info("commandstats")
            command = {"PING": "ping", "ECHO <entry>": "echo", "RPUSH <entry>": "rpush"}
            server[name] = stats[f"cmdstat_{command.get(name, 'evalsha')}"]["usec_per_call"]
        client.close()

    ping = c.median(medians["PING"])
    rows = [
        [name, f"{c.median(v):.1f}", f"{c.median(v) / ping:.2f}", f"{server[name]:.2f}"]
        for name, v in medians.items()
    ]
    print()
    print(f"Interleaved, {args.repeats} x {args.ops} of each; median us per op")
    print(c.table(["op", "client us", "x PING", "inside Redis us"], rows))
    c.write_json(args.json, {"machine": info, "medians_us": medians, "server_us": server})


if __name__ == "__main__":
    main()
