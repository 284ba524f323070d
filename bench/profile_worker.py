"""Profile a worker draining a backlog of 10-step tasks, with py-spy.

    /work/main/.venv/bin/python bench/profile_worker.py [--kind durable] [--tasks 3000]
                                    [--steps 10] [--json FILE] [--out DIR]
    /work/main/.venv/bin/python bench/profile_worker.py --report RAW.pyspy.txt.gz [--cpu-ms X]

Starts a private Redis and a ``--pool=solo`` worker subprocess (one process, so that
py-spy sees all of its work), stops it consuming, queues ``--tasks`` tasks, starts
``py-spy record`` on the worker, lets it drain the queue, and stops py-spy. It prints,
for the samples inside Celery's ``trace_task``, the share of those whose stack holds
each of the frames that matter (inclusive), and the top frames by inclusive share; and,
for all of the worker's samples, where the frame on CPU (the leaf) is. The raw profile is
kept gzipped beside ``--json`` (or in ``--out``).
py-spy is not a dependency of the project: ``pip install py-spy``. py-spy leaves out
samples of threads that sleep (a worker waiting for Redis's reply), so shares are of the
worker's time on CPU; the worker's CPU per task (from /proc over the drain) turns them
into approximate milliseconds per task.
"""

from __future__ import annotations

import collections
import gzip
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common as c
from celery.result import ResultSet

sys.path.append(str(Path(__file__).resolve().parent.parent))
from bench.celery_app import configure

#: Frames whose inclusive share is reported, by a substring of the frame's text.
WATCH = {
    "start (begin)": "begin (celery_durable/invocation.py",
    "appends (commit)": "commit (celery_durable/engine/execution.py",
    "finish (complete)": "complete (celery_durable/invocation.py",
    "result backend store": "store_result (celery/backends/",
    "redis-py get_connection": "get_connection (redis/connection.py",
    "redis-py release": "release (redis/connection.py",
    "redis-py _checkpid": "_checkpid (redis/connection.py",
    "redis-py can_read": "can_read (redis/",
    "redis-py call_with_retry": "call_with_retry (redis/retry.py",
    "redis-py pack_command": "pack_command (redis/",
    "socket send": "send_packed_command (redis/connection.py",
    "socket read": "read_response (redis/",
    "lean path: call": "call (celery_durable/stores/redis/lean.py",
    "lean path: transaction": "transaction (celery_durable/stores/redis/lean.py",
    "task body (the 10 ctx.run)": "durable (bench/celery_app.py",
}

#: Where the leaf frame (the one on CPU) is, by a substring of its file path; first match.
LEAVES = {
    "socket send (sendall: the kernel's loopback TCP path)": "send_packed_command (redis/",
    "socket recv (read_from_socket)": "read_from_socket (redis/_parsers",
    "threads waiting (Condition.wait: not CPU)": "wait (threading.py",
    "redis-py, the rest": "(redis/",
    "celery-durable": "(celery_durable/",
    "kombu": "(kombu/",
    "celery / billiard": "(celery/",
    "json (stdlib)": "(json/",
    "socket, selectors (stdlib)": "(socket.py",
    "bench task body": "(bench/",
}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--kind", default="durable", choices=["durable", "plain", "plain_late"])
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--steps", type=int, default=10, help="steps per task (1: the fixed cost)")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument(
        "--out",
        type=Path,
        help="where py-spy's raw file goes (default: beside --json, else /tmp/profile_worker)",
    )
    p.add_argument("--report", type=Path, help="only report on this raw file of an earlier run")
    p.add_argument("--cpu-ms", type=float, default=0.0, help="with --report: worker CPU per task")
    args = p.parse_args()
    if args.report:
        report(args.report, args.cpu_ms)
        return
    if args.out is None:
        args.out = args.json.parent if args.json else Path("/tmp/profile_worker")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    prefix = c.unique_prefix("profile")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile_worker-{args.kind}-{args.steps}.pyspy.txt"
    with c.redis_for(args, prefix) as url:
        c.print_machine(c.machine(url))
        app = configure(url, prefix, c.Worker.queue_of(prefix))
        task = app.tasks[f"bench.{args.kind}"]
        with c.Worker(url, prefix, "--pool=solo") as worker:
            worker.wait_ready(app.tasks["bench.plain"])
            ResultSet([task.apply_async((args.steps,)) for _ in range(200)]).get(
                timeout=120
            )  # warm
            control, destination = app.control, [worker.name]
            assert control.cancel_consumer(worker.queue, reply=True, destination=destination)
            results = [task.apply_async((args.steps,)) for _ in range(args.tasks)]
            assert worker.process is not None
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(worker.process.pid), "--rate", str(args.rate),
                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches
            cpu0 = c.group_cpu_seconds(worker.process.pid)
            t0 = time.perf_counter()
            assert control.add_consumer(worker.queue, reply=True, destination=destination)
            ResultSet(results).get(timeout=600)
            took = time.perf_counter() - t0
            cpu_ms = (c.group_cpu_seconds(worker.process.pid) - cpu0) / args.tasks * 1e3
            spy.send_signal(signal.SIGINT)
            spy.communicate(timeout=60)
        app.close()
    print(
        f"{args.kind}: {args.tasks} tasks drained in {took:.2f} s ({args.tasks / took:.0f}/s); "
        f"worker CPU {cpu_ms:.2f} ms per task"
    )
    figures = report(raw, cpu_ms)
    # Kept gzipped (a tenth of the size): --report reads it again.
    raw.with_name(raw.name + ".gz").write_bytes(gzip.compress(raw.read_bytes(), 9))
    raw.unlink()
    c.write_json(args.json, {"kind": args.kind, "tasks": args.tasks, "steps": args.steps,
                             "rate": args.tasks / took,
                             "cpu_ms_per_task": cpu_ms, **figures})  # fmt: skip


def records(raw: Path) -> Iterator[tuple[str, int]]:
    """(stack, samples) from py-spy's raw format (gzipped or not); a frame's text may hold
    a newline."""
    text = gzip.decompress(raw.read_bytes()).decode() if raw.suffix == ".gz" else raw.read_text()
    pending = ""
    for line in text.splitlines():
        pending += line
        stack, _, count = pending.rpartition(" ")
        if count.isdigit() and stack:
            yield stack, int(count)
            pending = ""
        else:
            pending += " "


def report(raw: Path, cpu_ms: float) -> dict[str, Any]:
    """Print where the worker's on-CPU samples are: by leaf frame, and inclusive shares of
    the watched frames among the samples inside trace_task."""
    inside, everything, totals = 0, 0, collections.Counter[str]()
    watched = collections.Counter[str]()
    leaves = collections.Counter[str]()
    selfs = collections.Counter[str]()
    for stack, count in records(raw):
        everything += count
        leaf = stack.rsplit(";", 1)[-1]
        selfs[leaf] += count
        where = next((label for label, needle in LEAVES.items() if needle in leaf), "other")
        leaves[where] += count
        if "trace_task" not in stack:
            continue
        inside += count
        frames = stack.split(";")
        for frame in set(frames):
            totals[frame] += count
        for label, needle in WATCH.items():
            if needle in stack:
                watched[label] += count
    print(
        f"on-CPU samples: {everything}, of which inside trace_task: {inside} "
        f"({inside / everything:.0%})"
    )

    # Samples of threads blocked in Condition.wait are not CPU time: leave them out of
    # what the worker's CPU per task is shared among.
    waiting = leaves["threads waiting (Condition.wait: not CPU)"]
    scale = everything / max(1, everything - waiting)

    def ms(share: float) -> str:
        return f"{share * scale * cpu_ms:.2f}" if share < 1 else ""

    rows_leaf = [[label, f"{n / everything:.0%}", ms(n / everything) if "not CPU" not in label
                  else "-"] for label, n in leaves.most_common()]  # fmt: skip
    print(c.table(["leaf frame (on CPU) in, all samples of the worker", "share",
                   "≈ ms per task"], rows_leaf))  # fmt: skip
    rows_self = [[frame[:110], f"{n / everything:.1%}"] for frame, n in selfs.most_common(15)]
    print(c.table(["top leaf frames (self)", "share of all"], rows_self))
    share_inside = inside / everything
    rows: list[list[Any]] = [
        [label, f"{watched[label] / inside:.0%}", ms(watched[label] / everything)]
        for label in WATCH
    ]
    print(c.table(["frame (inclusive)", "share of trace_task", "≈ ms per task"], rows))
    top = [[frame[:110], f"{n / inside:.0%}"] for frame, n in totals.most_common(80)
           if n / inside < 0.97][:30]  # fmt: skip
    print(c.table(["top frames inside trace_task (inclusive)", "share"], top))
    return {
        "samples": everything,
        "inside_trace_task": share_inside,
        "leaves": {label: n / everything for label, n in leaves.items()},
        "watched": {label: watched[label] / inside for label in WATCH},
    }


if __name__ == "__main__":
    main()
