"""Profile a worker draining a backlog of 10-step tasks, with py-spy.

    /work/venv/bin/python bench/profile_worker.py [--kind durable] [--tasks 3000] [--out DIR]

Starts a private Redis and a ``--pool=solo`` worker subprocess (one process, so that
py-spy sees all of its work), stops it consuming, queues ``--tasks`` tasks, starts
``py-spy record`` on the worker, lets it drain the queue, and stops py-spy. It prints,
for the samples inside Celery's ``trace_task``, the share of those whose stack holds
each of the frames that matter (inclusive), and the top frames by inclusive share.
py-spy comes with the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import time
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
    "redis-py": "(redis/",
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
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=Path("/tmp/profile_worker"))
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    prefix = c.unique_prefix("profile")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.kind}.txt"
    with c.redis_for(args, prefix) as url:
        c.print_machine(c.machine(url))
        app = configure(url, prefix, c.Worker.queue_of(prefix))
        task = app.tasks[f"bench.{args.kind}"]
        with c.Worker(url, prefix, "--pool=solo") as worker:
            worker.wait_ready(app.tasks["bench.plain"])
            ResultSet([task.apply_async((10,)) for _ in range(200)]).get(timeout=120)  # warm
            control, destination = app.control, [worker.name]
            assert control.cancel_consumer(worker.queue, reply=True, destination=destination)
            results = [task.apply_async((10,)) for _ in range(args.tasks)]
            assert worker.process is not None
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(worker.process.pid), "--rate", str(args.rate),
                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches
            t0 = time.perf_counter()
            assert control.add_consumer(worker.queue, reply=True, destination=destination)
            ResultSet(results).get(timeout=600)
            took = time.perf_counter() - t0
            spy.send_signal(signal.SIGINT)
            _, errors = spy.communicate(timeout=60)
        app.close()
    print(f"{args.kind}: {args.tasks} tasks drained in {took:.2f} s ({args.tasks / took:.0f}/s)")
    summary = [line for line in errors.decode(errors="replace").splitlines() if "Samples" in line]
    print(f"py-spy: {' '.join(summary)}")
    report(raw)


def report(raw: Path) -> None:
    """Print inclusive shares of the watched frames among samples inside trace_task."""
    inside, everything, totals = 0, 0, collections.Counter[str]()
    watched = collections.Counter[str]()
    leaves = collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        everything += count
        leaf = stack.rsplit(";", 1)[-1]
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
    rows_leaf = [[label, f"{n / everything:.0%}"] for label, n in leaves.most_common()]
    print(c.table(["leaf frame in (all samples of the worker)", "share"], rows_leaf))
    rows: list[list[Any]] = [[label, f"{watched[label] / inside:.0%}"] for label in WATCH]
    print(c.table(["frame (inclusive)", "share of trace_task"], rows))
    top = [[frame[:110], f"{n / inside:.0%}"] for frame, n in totals.most_common(40)]
    print(c.table(["top frames (inclusive)", "share"], top))


if __name__ == "__main__":
    main()
