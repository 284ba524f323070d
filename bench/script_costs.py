"""Redis-side cost of each script: microseconds per call inside Redis (INFO commandstats).

    /work/venv/bin/python bench/script_costs.py [--invocations 2000] [--steps 10]

Runs the life of ``--invocations`` invocations against a private Redis through the
package's ``RedisJournalStore``, one phase at a time (first starts, appends, resumed
starts, finishes), one call at a time on one connection, resetting the statistics
before each phase. Per phase it gives:

- ``usec_per_call`` of the phase's top-level command from ``INFO commandstats``:
  ``EVALSHA`` for a script; for the start, the script alone and the whole transaction
  (``EXEC`` counts the commands it runs: start.lua, ``LRANGE`` of the journal,
  ``HGETALL`` of the completions; plus ``MULTI``). This is the time Redis spends
  executing the command, not reading, parsing and answering it;
- the redis-server's CPU per call (``INFO cpu``, user + system, over the phase / calls):
  everything the server spends on the request, its read and write system calls included,
  for a client that sends one request per round trip.

``PING`` and an ``EVALSHA`` of an empty script are the floor. These are the figures a
shard's capacity follows from (bench/shard_cost.py, bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _common as c
import redis

from celery_durable.fingerprint import fingerprint
from celery_durable.journal.entries import encode_entry
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore

EMPTY = "return false"
#: Phases whose command is a MULTI transaction: EXEC's time includes what it ran.
TRANSACTION = ("exec", "multi")


def command_usec(client: redis.Redis, commands: tuple[str, ...]) -> tuple[float, int]:
    """Total microseconds in ``commands`` (INFO commandstats), and the first one's calls."""
    stats: dict[str, Any] = client.info("commandstats")
    usec = sum(float(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in commands)
    calls = int(stats.get(f"cmdstat_{commands[0]}", {}).get("calls", 0))
    return usec, calls


def measure(url: str, prefix: str, n: int, k: int) -> dict[str, dict[str, float]]:
    """The phases' costs: ``{phase: {"usec_per_call", "script_usec", "cpu_us", "calls"}}``."""
    store = RedisJournalStore.from_url(url, KeySpace(prefix))
    client = store.client
    ids = [f"{prefix}-{i}" for i in range(n)]
    request = StartRequest("bench.task", fingerprint(("order-1",), {}), 1, 0.001, "b:1")
    entry = encode_entry("run", "step", 0.0, 0.0, "json", '{"amount":10}')
    outcome = '{"s":"ok","v":{"total":100}}'
    empty_sha = client.script_load(EMPTY)
    figures: dict[str, dict[str, float]] = {}

    def phase(name: str, commands: tuple[str, ...], run: Callable[[], Any]) -> None:
        run_count = 0

        def counted() -> None:
            nonlocal run_count
            run_count = len(run())

        client.config_resetstat()
        cpu0 = c.redis_cpu_seconds(client)
        counted()
        cpu1 = c.redis_cpu_seconds(client)
        usec, calls = command_usec(client, commands)
        script, _ = command_usec(client, ("evalsha",))
        figures[name] = {
            "usec_per_call": usec / calls,
            "script_usec": script / calls,
            "cpu_us": (cpu1 - cpu0) / run_count * 1e6,
            "calls": calls,
        }

    fences: dict[str, int] = {}

    def starts() -> list[Any]:
        for i in ids:
            fences[i] = store.start(i, request).fence
        return ids

    phase("PING", ("ping",), lambda: [client.ping() for _ in range(n)])
    phase("EVALSHA of an empty script", ("evalsha",),
          lambda: [client.evalsha(empty_sha, 0) for _ in range(n)])  # fmt: skip
    phase("start, new invocation (MULTI: start.lua, LRANGE, HGETALL)", TRANSACTION, starts)
    appends = [(i, j) for i in ids for j in range(k)]
    phase(f"append (append.lua), {k} per invocation", ("evalsha",),
          lambda: [store.append(i, fences[i], j, entry, False) for i, j in appends])  # fmt: skip
    # The lease of a millisecond has run out: this start takes over, as a redelivery
    # after a worker's death does, and loads the k entries.
    phase(f"start, taking over ({k} entries)", TRANSACTION, starts)
    phase("finish (finish.lua), completed", ("evalsha",),
          lambda: [store.finish(i, fences[i], "completed", outcome, 600) for i in ids])  # fmt: skip
    client.close()
    return figures


def per_invocation(figures: dict[str, dict[str, float]], k: int, key: str) -> float:
    """One first start, ``k`` appends and a finish, by ``key`` of the phases."""
    names = list(figures)
    start, append, finish = names[2], names[3], names[5]
    return figures[start][key] + k * figures[append][key] + figures[finish][key]


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--invocations", type=int, default=2000)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    prefix = c.unique_prefix("scripts")
    n, k = args.invocations, args.steps
    with c.redis_for(args, prefix) as url:
        info = c.machine(url)
        c.print_machine(info)
        figures = measure(url, prefix, n, k)
    rows = [
        [name, f"{f['usec_per_call']:.2f}",
         f"{f['script_usec']:.2f}" if f["script_usec"] and "start" in name else "",
         f"{f['cpu_us']:.1f}", int(f["calls"])]
        for name, f in figures.items()
    ]  # fmt: skip
    print(c.table(["what", "us per call inside Redis", "of which the script",
                   "redis-server CPU us per call", "calls"], rows))  # fmt: skip
    usec = per_invocation(figures, k, "usec_per_call")
    cpu = per_invocation(figures, k, "cpu_us")
    print(
        f"one {k}-step invocation (start, {k} appends, finish): {usec:.1f} us inside Redis "
        f"({usec / figures['EVALSHA of an empty script']['usec_per_call']:.0f} x an empty "
        f"script's), {cpu:.0f} us of redis-server CPU ({cpu / figures['PING']['cpu_us']:.1f} x "
        "PING's)"
    )
    c.write_json(
        args.json,
        {"machine": info, "steps": k, "figures": figures, "per_invocation_usec": usec,
         "per_invocation_cpu_us": cpu},
    )  # fmt: skip


if __name__ == "__main__":
    main()
