"""Summarize several ``run_all.py --out DIR`` runs: the median of the runs, and each run.

    /work/venv/bin/python bench/summarize.py bench/results/run1 bench/results/run2 ...

Prints the Markdown table of bench/README.md's "Figures" section.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main() -> None:
    runs = [Path(arg) for arg in sys.argv[1:]]
    if not runs:
        sys.exit(__doc__)

    def load(name: str) -> list[dict[str, Any]]:
        return [json.loads((run / f"{name}.json").read_text()) for run in runs]

    rows: list[list[str]] = []

    def row(number: int, figure: str, values: list[float], fmt: Callable[[float], str],
            target: str = "", verdict: Callable[[float], bool] | None = None,
            extra: str = "") -> None:  # fmt: skip
        med = statistics.median(values)
        each = ", ".join(fmt(v) for v in values)
        ok = "" if verdict is None else ("met" if verdict(med) else "**missed**")
        text = f"**{fmt(med)}** ({each}){extra}" if verdict else f"{fmt(med)} ({each}){extra}"
        rows.append([str(number), figure, text, target, ok])

    def x2(v: float) -> str:
        return f"{v:.2f}"

    def us(v: float) -> str:
        return f"{v:.1f} µs"

    def ms(v: float) -> str:
        return f"{v:.2f} ms"

    steps = load("step_overhead")

    def per_run(key: str) -> list[float]:
        return [statistics.median(r[key] for r in s["repeats"]) for s in steps]

    row(1, "`ctx.run` no-op ÷ `PING`, Redis store", per_run("ratio"), x2, "≤ 1.3",
        lambda v: v <= 1.3)  # fmt: skip
    row(1, "  `PING` / `ctx.run`, µs", per_run("ping"), us,
        extra=f" / {us(statistics.median(per_run('step')))} ({', '.join(us(v) for v in per_run('step'))})")  # fmt: skip  # noqa: E501
    row(1, "raw `EVALSHA append.lua` (redis-py only) ÷ `PING`", per_run("raw_ratio"), x2)
    row(1, "raw `EVALSHA` of `return false` ÷ `PING`", per_run("empty_ratio"), x2)
    row(1, "`ctx.run` no-op, memory store (pure Python step path)", per_run("mem_step"), us)
    row(1, "`ctx.run` minus raw `EVALSHA` (celery-durable's Python around it)",
        [a - b for a, b in zip(per_run("step"), per_run("raw"), strict=True)], us)  # fmt: skip
    latency = load("latency")
    row(1, "`ctx.run` ÷ `PING` inside a worker process",
        [r["in_worker"]["step_us"] / r["in_worker"]["ping_us"] for r in latency], x2)  # fmt: skip

    replay = load("replay")
    sizes = list(replay[0]["results"])
    trips = {n: sorted({r["results"][n]["client_sends"] for r in replay}) for n in sizes}
    one = all(t == [1] for t in trips.values())
    rows.append(["2", f"round trips to replay {' / '.join(f'{int(n):,}' for n in sizes)} steps",
                 " / ".join("/".join(map(str, t)) for t in trips.values()) + " in every run",
                 "1", "met" if one else "**missed**"])  # fmt: skip
    for n in sizes:
        big = n == sizes[-1]
        row(2, f"replay of {int(n):,} steps (begin + {int(n):,} replayed `ctx.run`)",
            [r["results"][n]["replay_ms"] for r in replay], ms,
            "≪ 100 ms" if big else "", (lambda v: v < 100) if big else None)  # fmt: skip
    row(2, f"  of which begin, {int(sizes[-1]):,} steps",
        [r["results"][sizes[-1]]["begin_ms"] for r in replay], ms)  # fmt: skip
    if "start_ms" in replay[0]["results"][sizes[-1]]:
        row(2, f"  start.lua vs plain `LRANGE`, {int(sizes[-1]):,} entries (client)",
            [r["results"][sizes[-1]]["start_ms"] for r in replay], ms,
            extra=" vs " + ", ".join(ms(r["results"][sizes[-1]]["lrange_ms"]) for r in replay))  # fmt: skip  # noqa: E501

    throughput = load("throughput")
    for conc, mode in ((4, "end to end"), (2, "end to end"), (4, "drain"), (2, "drain")):
        figs = [f for t in throughput for f in t["figures"]
                if f["concurrency"] == conc and f["mode"] == mode]  # fmt: skip
        if not figs:
            continue
        headline = conc == 4 and mode == "end to end"
        rates = [
            "{}/{}".format(*(round(statistics.median(x["rate"] for x in f["runs"][k]))
                             for k in ("durable", "plain")))
            for f in figs
        ]  # fmt: skip
        row(3, f"throughput durable ÷ plain, 10 steps, `-c {conc}`, {mode}",
            [f["ratio"] for f in figs], x2, "≥ 0.8" if headline else "",
            (lambda v: v >= 0.8) if headline else None,
            extra=f"; tasks/s {', '.join(rates)}")  # fmt: skip
        if headline:
            cpu = [
                "/".join(f"{sum(statistics.median(x[f'cpu_{p}_ms'] for x in f['runs'][k]) for p in ('worker', 'redis', 'client')):.1f}"  # noqa: E501
                         for k in ("durable", "plain"))
                for f in figs
            ]  # fmt: skip
            rows.append(["3", f"  CPU ms per task, all processes, `-c {conc}` {mode}: "
                         "durable/plain", ", ".join(cpu), "", ""])  # fmt: skip

    memory = load("memory")
    for label in ("int 7", "str 10 bytes"):
        picks = [next(r for r in m["results"] if r["payload"] == label and r["n"] == 1000)
                 for m in memory]  # fmt: skip
        row(4, f"Redis bytes per step beyond the payload ({label}), N = 1,000",
            [p["overhead"] for p in picks], lambda v: f"{v:.1f} B", "≤ 150 B",
            lambda v: v <= 150,
            extra=f"; {picks[0]['per_step']:.1f} B/step in all, entry JSON "
            f"{picks[0]['entry_text']:.0f} B")  # fmt: skip

    for n in latency[0]["samples"]:
        durable = [statistics.median(r["samples"][n]["durable"]) * 1e3 for r in latency]
        plain = [statistics.median(r["samples"][n]["plain"]) * 1e3 for r in latency]
        row(5, f"latency, {n} steps: durable minus plain (medians)",
            [d - p for d, p in zip(durable, plain, strict=True)], lambda v: f"{v:+.2f} ms",
            extra=f"; durable {ms(statistics.median(durable))}, "
            f"plain {ms(statistics.median(plain))}")  # fmt: skip

    if all((run / "append_variants.json").exists() for run in runs):
        variants = load("append_variants")
        for name in ("EVALSHA append.lua", "EVALSHA lean append", "EVALSHA 'return false'",
                     "RPUSH <entry>"):  # fmt: skip
            row(1, f"append_variants: {name} ÷ `PING`",
                [statistics.median(v["medians_us"][name]) / statistics.median(
                    v["medians_us"]["PING"]) for v in variants], x2)  # fmt: skip

    print("| # | figure | median of runs (each run) | target | |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    commits = sorted({s["machine"]["package"] for s in steps})
    print(f"\npackage: {'; '.join(commits)}")


if __name__ == "__main__":
    main()
