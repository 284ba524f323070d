"""Run every benchmark, one after the other, with its default settings.

    .venv/bin/python bench/run_all.py [--out bench/results] [--only replay memory]
                                      [--package HEAD | --working-tree]

Each script starts (and stops) its own redis-server and, for latency, throughput and
profile_worker, its own worker subprocesses; with ``--out`` each also writes its figures
as JSON there (profile_worker also its raw py-spy profile, gzipped). shard_cost runs only
when named with ``--only``. Every script runs with its default settings.

By default the package measured is ``celery_durable`` as committed at ``--package``
(HEAD), exported to a temporary directory put first on PYTHONPATH (worker subprocesses
included), so that edits in the working tree during a run cannot change what is measured.
``--working-tree`` measures the files as they are instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "step_overhead", "replay", "memory", "latency", "throughput", "append_variants", "script_costs",
    "profile_worker",
]  # fmt: skip
#: Run only when named with --only: it takes minutes and measures the server, not a change.
EXTRA = ["shard_cost"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write each script's figures to <out>/<name>.json")
    p.add_argument("--only", nargs="+", choices=SCRIPTS + EXTRA, help="run only these")
    p.add_argument("--package", default="HEAD", help="git revision of celery_durable to measure")
    p.add_argument("--working-tree", action="store_true", help="measure the files as they are")
    args = p.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-package-") as export:
        if not args.working_tree:
            commit = export_package(args.package, Path(export))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [export, env.get("PYTHONPATH")]))
            print(f"# measuring celery_durable at {commit}, exported to {export}")
        run(args, env)


def export_package(revision: str, into: Path) -> str:
    """Write ``celery_durable`` as committed at ``revision`` into ``into``."""
    root = HERE.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=root, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    archive = into / "package.tar"
    subprocess.run(
        ["git", "archive", "-o", str(archive), commit, "celery_durable"], cwd=root, check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    (into / "COMMIT").write_text(f"{commit} (git archive of celery_durable)\n")
    return commit


def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    failed = []
    for name in args.only or SCRIPTS:
        command = [sys.executable, str(HERE / f"{name}.py")]
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            command += ["--json", str(args.out / f"{name}.json")]
        print(f"\n## {name}: {' '.join(command)}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call(command, env=env)
        print(f"## {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
