"""What the benchmark scripts share: a private redis-server, worker subprocesses, statistics.

Every script runs against a ``redis-server`` of its own on a free port (no persistence),
started here and stopped at the end, so that other users of the machine's Redis neither
disturb the figures nor see the keys. ``--redis-url`` points a script at an existing
Redis instead; it then works under a unique key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- Redis ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis(*extra: str) -> Iterator[str]:
    """Run a redis-server of our own on a free port; yield its URL, stop it afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("these benchmarks need redis-server on PATH (or pass --redis-url)")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_for(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """Yield the Redis URL to use: a private server, or ``--redis-url`` cleaned afterwards."""
    if args.redis_url is None:
        with private_redis() as url:
            yield url
        return
    try:
        yield args.redis_url
    finally:
        delete_prefix(args.redis_url, prefix)


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    batch: list[bytes] = []
    for key in client.scan_iter(f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    client.close()


def unique_prefix(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:10]}"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--redis-url",
        help="use this Redis (under a unique key prefix) instead of a private redis-server",
    )
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return p


class Monitor:
    """Record the commands Redis receives, with MONITOR, on a thread."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.stopper = redis.Redis.from_url(url, decode_responses=True)
        self.stopper.ping()  # connected before MONITOR starts, so its handshake is not seen
        self.stop_word = f"bench-stop-{uuid.uuid4().hex}"
        self.commands: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for command in monitor.listen():
                if self.stop_word in command["command"]:
                    return
                self.commands.append(command)

    def __enter__(self) -> Monitor:
        self.thread.start()
        self.ready.wait(5)
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopper.echo(self.stop_word)
        self.thread.join(10)
        self.stopper.close()
        self.client.close()


# -- Statistics and output --------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# -- The package -------------------------------------------------------------------------


def begin(store: Any, task_id: str, task_name: str, codec: Any, lease_ttl: float = 30.0) -> Any:
    """Start an execution of a task without arguments, as ``DurableTask`` does, with the
    default retry policy; return its context, or the recorded outcome if it finished.

    A short ``lease_ttl`` lets the next start take over without a release round trip."""
    from celery_durable import invocation
    from celery_durable.context import DurableContext
    from celery_durable.fingerprint import fingerprint
    from celery_durable.journal.store import StartRequest
    from celery_durable.policy import RetryPolicy

    request = StartRequest(task_name, fingerprint((), {}), 1, lease_ttl, "bench:1")
    started = invocation.begin(store, task_id, request, codec, RetryPolicy(), 600.0)
    return started if isinstance(started, invocation.Finished) else DurableContext(started)


def finish(ctx: Any) -> None:
    """End a context's execution and release its lease, as a task's clean end does."""
    ctx._ex.close()
    ctx._ex.store.release(ctx._ex.id, ctx._ex.fence)


def package_version() -> str:
    """The commit of the package measured, and whether its files differ from it."""
    import celery_durable

    where = Path(celery_durable.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "celery_durable"], cwd=where,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        marker = where / "COMMIT"
        return marker.read_text().strip() if marker.exists() else f"unknown ({where})"
    return f"{commit}{' + uncommitted changes' if dirty else ''} ({where})"


# -- The machine --------------------------------------------------------------------------


def machine(redis_url: str) -> dict[str, Any]:
    """Facts about this machine and software that the figures depend on."""
    import celery
    import kombu
    from redis.utils import HIREDIS_AVAILABLE

    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    client = redis.Redis.from_url(redis_url)
    server = client.info("server")
    conn = client.connection_pool.get_connection()
    parser_name = type(conn._parser).__name__
    client.connection_pool.release(conn)
    client.close()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": server["redis_version"],
        "redis_py": redis.__version__,
        "hiredis": bool(HIREDIS_AVAILABLE),
        "parser": parser_name,
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "loadavg": os.getloadavg(),
        "package": package_version(),
    }


def print_machine(info: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.2f}" for x in info["loadavg"])
    print(
        f"# machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"Redis {info['redis_server']}, redis-py {info['redis_py']} "
        f"(parser {info['parser']}), celery {info['celery']}, load average {load}"
    )
    print(f"# celery_durable: {info['package']}")


# -- CPU time ---------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After the command: state, ppid, pgrp, ..., utime (12th), stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def redis_cpu_seconds(client: redis.Redis) -> float:
    """User + system CPU seconds the redis-server has used."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# -- Worker subprocesses ------------------------------------------------------------------


class Worker:
    """A ``celery -A bench.celery_app worker`` subprocess on a queue of its own."""

    def __init__(self, redis_url: str, prefix: str, *options: str) -> None:
        self.queue = self.queue_of(prefix)
        self.name = f"{prefix}@{socket.gethostname()}"
        self.env = dict(
            os.environ,
            BENCH_REDIS_URL=redis_url,
            BENCH_PREFIX=prefix,
            BENCH_QUEUE=self.queue,
            # After any PYTHONPATH given, so that a package export put there comes first.
            PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        )
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="bench-worker-", suffix=".log", delete=False
        )

    @staticmethod
    def queue_of(prefix: str) -> str:
        return f"{prefix}-q"

    def start(self) -> None:
        celery_bin = Path(PYTHON).with_name("celery")
        command = [str(celery_bin), "-A", "bench.celery_app", "worker", "-n", self.name,
                   "-Q", self.queue, "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                   "--without-heartbeat", *self.options]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            # Not the repository: Python would put it before PYTHONPATH, and with it the
            # working tree's celery_durable before an export that run_all.py put there.
            cwd=tempfile.gettempdir(),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so we can stop all of it
        )

    def wait_ready(self, task: Any) -> None:
        """Wait until the worker has run a first ``task(0)``: it is then consuming."""
        deadline = time.monotonic() + 60
        result = task.apply_async((0,))
        while not result.ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.tail()}")
            time.sleep(0.05)
        result.get()
        where = task.app.tasks["bench.where"].apply_async().get(timeout=30)
        print(f"# worker {' '.join(self.options)}: celery_durable from {where}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = Path(self.log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
