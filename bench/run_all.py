"""Run every benchmark, one after the other, with its default settings.

    /work/venv/bin/python bench/run_all.py [--out bench/results] [--only replay memory]

Each script starts (and stops) its own redis-server and, for latency and throughput,
its own worker subprocesses; with ``--out`` each also writes its figures as JSON there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["step_overhead", "replay", "memory", "latency", "throughput"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write each script's figures to <out>/<name>.json")
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    args = p.parse_args()
    failed = []
    for name in args.only or SCRIPTS:
        command = [sys.executable, str(HERE / f"{name}.py")]
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            command += ["--json", str(args.out / f"{name}.json")]
        print(f"\n## {name}: {' '.join(command)}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call(command)
        print(f"## {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
