"""Summarize ``run_all.py --out DIR`` runs: the median of the runs, and each run.

    /work/venv/bin/python bench/summarize.py bench/results/run1 bench/results/run2 ...
    /work/venv/bin/python bench/summarize.py --before DIR DIR ... --after DIR DIR ...

Prints the Markdown tables of bench/README.md's "Figures" section: the figures, then the
CPU per task by process. With ``--before`` and ``--after``, each figure has a column
per set of runs (the runs of each set measured one package, alternating with the other).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_TARGET = 1.2
DRAIN_TARGET = 0.8


@dataclass
class Row:
    number: str
    figure: str
    values: list[float]
    fmt: Callable[[float], str]
    target: str = ""
    verdict: Callable[[float], bool] | None = None
    extra: str = ""

    def cell(self) -> str:
        med = statistics.median(self.values)
        each = ", ".join(self.fmt(v) for v in self.values)
        text = f"{self.fmt(med)} ({each}){self.extra}"
        return f"**{text.split(' (', 1)[0]}** ({text.split(' (', 1)[1]}" if self.verdict else text

    def judged(self) -> str:
        if self.verdict is None:
            return ""
        return "met" if self.verdict(statistics.median(self.values)) else "**missed**"


@dataclass
class Figures:
    rows: dict[str, Row] = field(default_factory=dict)
    cpu: dict[tuple[int, int, str, str], dict[str, list[float]]] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


def x2(v: float) -> str:
    return f"{v:.2f}"


def us(v: float) -> str:
    return f"{v:.1f} µs"


def ms(v: float) -> str:
    return f"{v:.2f} ms"


def med(xs: Any) -> float:
    return statistics.median(list(xs))


def collect(runs: list[Path]) -> Figures:
    out = Figures()

    def load(name: str) -> list[dict[str, Any]] | None:
        """The runs' figures of one script; a run where it failed is left out."""
        paths = [run / f"{name}.json" for run in runs if (run / f"{name}.json").exists()]
        return [json.loads(p.read_text()) for p in paths] or None

    def row(key: str, number: int, figure: str, values: list[float], fmt: Callable[[float], str],
            target: str = "", verdict: Callable[[float], bool] | None = None,
            extra: str = "") -> None:  # fmt: skip
        out.rows[key] = Row(str(number), figure, values, fmt, target, verdict, extra)

    steps = load("step_overhead")
    if steps:
        out.packages = [s["machine"]["package"].split(" ")[0] for s in steps]

        def per_run(key: str) -> list[float]:
            return [med(r[key] for r in s["repeats"]) for s in steps]

        pings = per_run("ping")
        out.states = ["fast" if p < 70 else "slow" for p in pings]
        row("step", 1, "`ctx.run` no-op ÷ `PING`, Redis store", per_run("ratio"), x2,
            f"≤ {STEP_TARGET}", lambda v: v <= STEP_TARGET)  # fmt: skip
        row("ping", 1, "  `PING` (redis-py), µs", pings, us)
        row("step_us", 1, "  `ctx.run` no-op, µs", per_run("step"), us)
        if "held_ping" in steps[0]["repeats"][0]:
            row("step_held", 1, "`ctx.run` ÷ `PING` on a held connection, pre-packed",
                per_run("step_held_ratio"), x2)  # fmt: skip
            row("held_ping", 1, "  held-connection `PING` ÷ redis-py `PING`",
                per_run("held_ping_ratio"), x2)  # fmt: skip
            row("held_append", 1, "  held-connection `EVALSHA append.lua` ÷ held `PING`",
                per_run("held_append_ratio"), x2)  # fmt: skip
            row("python_held", 1, "  `ctx.run` minus held `EVALSHA` (all the client's Python)",
                [a - b for a, b in zip(per_run("step"), per_run("held_append"), strict=True)],
                us)  # fmt: skip
        row("raw", 1, "raw `EVALSHA append.lua` (redis-py) ÷ `PING`", per_run("raw_ratio"), x2)
        row("empty", 1, "raw `EVALSHA` of `return false` (redis-py) ÷ `PING`",
            per_run("empty_ratio"), x2)  # fmt: skip
        row("mem_step", 1, "`ctx.run` no-op, memory store (pure Python step path)",
            per_run("mem_step"), us)  # fmt: skip
        row("python_raw", 1, "`ctx.run` minus redis-py `EVALSHA`",
            [a - b for a, b in zip(per_run("step"), per_run("raw"), strict=True)], us)  # fmt: skip
    latency = load("latency")
    if latency:
        inside = [r["in_worker"]["step_us"] / r["in_worker"]["ping_us"] for r in latency]
        row("in_worker", 1, "`ctx.run` ÷ `PING` inside a worker process", inside, x2)

    replay = load("replay")
    if replay:
        sizes = list(replay[0]["results"])
        trips = [max(r["results"][n]["client_sends"] for n in sizes) for r in replay]
        row("trips", 2, "round trips to replay 10 … 10,000 steps (most of any size)",
            [float(t) for t in trips], lambda v: f"{v:.0f}", "1", lambda v: v == 1)  # fmt: skip
        for n in sizes:
            big = n == sizes[-1]
            row(f"replay{n}", 2, f"replay of {int(n):,} steps (begin + {int(n):,} `ctx.run`)",
                [r["results"][n]["replay_ms"] for r in replay], ms,
                "≪ 100 ms" if big else "", (lambda v: v < 100) if big else None)  # fmt: skip
        last = sizes[-1]
        row("begin", 2, f"  of which begin, {int(last):,} steps",
            [r["results"][last]["begin_ms"] for r in replay], ms)  # fmt: skip
        row("start_ms", 2, f"  `store.start` alone, {int(last):,} entries (client)",
            [r["results"][last]["start_ms"] for r in replay], ms)  # fmt: skip
        row("lrange_ms", 2, "  plain `LRANGE` of them (client)",
            [r["results"][last]["lrange_ms"] for r in replay], ms)  # fmt: skip

    throughput = load("throughput")
    if throughput:
        combos = []
        for f in throughput[0]["figures"]:
            combo = (f.get("steps", 10), f["concurrency"], f["mode"])
            if combo not in combos:
                combos.append(combo)
        for k, conc, mode in combos:
            figs = [
                f for t in throughput for f in t["figures"]
                if (f.get("steps", 10), f["concurrency"], f["mode"]) == (k, conc, mode)
            ]  # fmt: skip
            if len(figs) != len(throughput):
                continue
            headline = k == 10 and conc == 4
            rates = [
                "{}/{}".format(*(round(med(x["rate"] for x in f["runs"][kind]))
                                 for kind in ("durable", "plain")))
                for f in figs
            ]  # fmt: skip
            row(f"tp{k}-{conc}-{mode}", 3,
                f"throughput durable ÷ plain, {k} step{'s' * (k != 1)}, `-c {conc}`, {mode}",
                [f["ratio"] for f in figs], x2, f"≥ {DRAIN_TARGET}" if headline else "",
                (lambda v: v >= DRAIN_TARGET) if headline else None,
                extra=f"; tasks/s {', '.join(rates)}")  # fmt: skip
            for kind in ("durable", "plain", "plain_late"):
                parts = {
                    part: [med(x[f"cpu_{part}_ms"] for x in f["runs"][kind]) for f in figs]
                    for part in ("worker", "redis", "client")
                }
                parts["total"] = [
                    med(sum(x[f"cpu_{p}_ms"] for p in ("worker", "redis", "client"))
                        for x in f["runs"][kind])
                    for f in figs
                ]  # fmt: skip
                out.cpu[k, conc, mode, kind] = parts
            durable = out.cpu[k, conc, mode, "durable"]["total"]
            plain = out.cpu[k, conc, mode, "plain"]["total"]
            row(f"cpu{k}-{conc}-{mode}", 3,
                f"  CPU per task, all processes, durable ÷ plain ({k}, `-c {conc}`, {mode})",
                [d / p for d, p in zip(durable, plain, strict=True)], x2,
                "≤ 1.25" if headline and mode == "drain" else "",
                (lambda v: v <= 1.25) if headline and mode == "drain" else None)  # fmt: skip

    if throughput:
        # A step's cost and an invocation's fixed cost, from the k = 1 and k = 100 rows of
        # each run: per step (durable(100) - durable(1)) / 99; fixed, what durable(1) costs
        # beyond plain_late(1) less that one step.
        def derived(t: dict[str, Any], conc: int, mode: str) -> dict[str, float] | None:
            fig = {(f.get("steps", 10), f["concurrency"], f["mode"]): f for f in t["figures"]}
            if (1, conc, mode) not in fig or (100, conc, mode) not in fig:
                return None

            def cpu(k: int, kind: str, part: str) -> float:
                return med(x[f"cpu_{part}_ms"] for x in fig[k, conc, mode]["runs"][kind]) * 1e3

            out = {}
            for part in ("worker", "redis"):
                step = (cpu(100, "durable", part) - cpu(1, "durable", part)) / 99
                out[f"step_{part}"] = step
                out[f"fixed_{part}"] = cpu(1, "durable", part) - cpu(1, "plain_late", part) - step
            return out

        for conc, mode in ((4, "drain"), (2, "drain"), (4, "end to end")):
            found = [d for t in throughput if (d := derived(t, conc, mode)) is not None]
            if not found:
                continue
            whats = (
                ("step", "a step (marginal)"),
                ("fixed", "an invocation, fixed, over plain_late"),
            )
            for key, what in whats:
                row(f"{key}-{conc}-{mode}", 3,
                    f"  CPU of {what}, `-c {conc}` {mode}: worker / redis-server",
                    [d[f"{key}_worker"] for d in found], lambda v: f"{v:.0f} µs",
                    extra=" / " + ", ".join(f"{d[f'{key}_redis']:.0f}" for d in found)
                    + f" µs (median {med(d[f'{key}_redis'] for d in found):.0f} µs)")  # fmt: skip

    memory = load("memory")
    if memory:
        for label in ("int 7", "str 10 bytes"):
            picks = [next(r for r in m["results"] if r["payload"] == label and r["n"] == 1000)
                     for m in memory]  # fmt: skip
            row(f"mem-{label}", 4, f"Redis bytes per step beyond the payload ({label}), N = 1,000",
                [p["overhead"] for p in picks], lambda v: f"{v:.1f} B", "≤ 150 B",
                lambda v: v <= 150,
                extra=f"; entry JSON {picks[0]['entry_text']:.0f} B")  # fmt: skip

    if latency:
        for n in latency[0]["samples"]:
            durable = [med(r["samples"][n]["durable"]) * 1e3 for r in latency]
            plain = [med(r["samples"][n]["plain"]) * 1e3 for r in latency]
            steps = f"{n} step{'' if n == '1' else 's'}"
            row(f"lat{n}", 5, f"latency, {steps}: durable minus plain (medians)",
                [d - p for d, p in zip(durable, plain, strict=True)], lambda v: f"{v:+.2f} ms",
                extra=f"; durable {ms(med(durable))}, plain {ms(med(plain))}")  # fmt: skip

    variants = load("append_variants")
    if variants:
        for name in ("EVALSHA append.lua", "EVALSHA lean append", "EVALSHA 'return false'",
                     "RPUSH <entry>"):  # fmt: skip
            row(f"av-{name}", 1, f"append_variants: {name} ÷ `PING`",
                [med(v["medians_us"][name]) / med(v["medians_us"]["PING"]) for v in variants],
                x2)  # fmt: skip

    costs = load("script_costs")
    if costs:
        for name in costs[0]["figures"]:
            row(f"sc-{name}", 6, f"inside Redis: {name}",
                [s["figures"][name]["usec_per_call"] for s in costs], lambda v: f"{v:.2f} µs",
                extra="; redis-server CPU per call "
                + ", ".join(f"{s['figures'][name]['cpu_us']:.0f}" for s in costs)
                + " µs")  # fmt: skip
        row("sc-total", 6, f"inside Redis: one {costs[0]['steps']}-step invocation",
            [s["per_invocation_usec"] for s in costs], lambda v: f"{v:.0f} µs",
            extra="; redis-server CPU "
            + ", ".join(f"{s['per_invocation_cpu_us']:.0f}" for s in costs) + " µs")  # fmt: skip
    return out


def print_single(f: Figures) -> None:
    print("| # | figure | median of runs (each run) | target | |")
    print("|---|---|---|---|---|")
    for r in f.rows.values():
        print(f"| {r.number} | {r.figure} | {r.cell()} | {r.target} | {r.judged()} |")
    print(f"\npackage: {'; '.join(sorted(set(f.packages)))}; VM state by run: {f.states}")


def print_pair(before: Figures, after: Figures) -> None:
    b, a = "; ".join(sorted(set(before.packages))), "; ".join(sorted(set(after.packages)))
    print(f"| # | figure | before: {b}, median (each run) | after: {a}, median (each run) "
          "| target | after |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for key, r in after.rows.items():
        old = before.rows.get(key)
        print(f"| {r.number} | {r.figure} | {old.cell() if old else ''} | {r.cell()} | "
              f"{r.target} | {r.judged()} |")  # fmt: skip
    print(f"\nVM state by run: before {before.states}, after {after.states}")


def print_cpu(before: Figures | None, after: Figures) -> None:
    print("\nCPU ms per task by process (median of the runs' medians over rounds)"
          + (": before → after" if before else ""))  # fmt: skip
    print("| k | -c | mode | kind | worker | redis-server | sender | total |")
    print("|---|---|---|---|---|---|---|---|")
    for (k, conc, mode, kind), parts in after.cpu.items():
        cells = []
        for part in ("worker", "redis", "client", "total"):
            now = f"{med(parts[part]):.2f}"
            old = before.cpu.get((k, conc, mode, kind)) if before else None
            cells.append(f"{med(old[part]):.2f} → {now}" if old else now)
        print(f"| {k} | {conc} | {mode} | {kind} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--before", nargs="+", type=Path)
    p.add_argument("--after", nargs="+", type=Path)
    args = p.parse_args()
    if args.before and args.after:
        before, after = collect(args.before), collect(args.after)
        print_pair(before, after)
        print_cpu(before, after)
    elif args.runs:
        figures = collect(args.runs)
        print_single(figures)
        print_cpu(None, figures)
    else:
        p.error("give run directories, or --before and --after")


if __name__ == "__main__":
    main()
