"""A Sentinel-managed Redis of a test's own: one primary, one replica, one sentinel.

Every server runs on a free port with its data, its log and (for the sentinel) its
configuration file in the test's temp dir, and is stopped by its pid. The sentinel
watches the primary with quorum 1, ``down-after-milliseconds`` 2000 and
``failover-timeout`` 5000, so that a dead primary is replaced in 3-5 s. (With 1000, a
busy 2-core machine sometimes kept a just promoted replica from answering for a second,
and the sentinel failed over a second time.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from tests.processes import RedisServer, free_port, wait_for

#: The name the sentinel monitors the primary under (``master_name``).
MASTER_NAME = "journal"
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000
#: A failover takes 3-5 s here; a busy 2-core machine may take longer.
FAILOVER_WAIT = 60.0
#: No persistence (a failover is what keeps the data), no eviction, no delay before a
#: replica's first sync.
REDIS_OPTIONS = ("--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0")


def pause(server: RedisServer) -> None:
    """SIGSTOP ``server``: it keeps its sockets, and neither reads nor answers."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)


def client_of(server: RedisServer | SentinelServer) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True, socket_timeout=5)


@dataclass
class SentinelServer:
    """``redis-server sentinel.conf --sentinel``: a sentinel needs a configuration file
    of its own, which it rewrites."""

    dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "sentinel.log"

    def start(self, monitored_port: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.log_path}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {monitored_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        )
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"sentinel exited with {process.returncode}:\n{self.log()}")
            try:
                with client_of(self) as client:
                    return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, f"the sentinel on port {self.port}", 20)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class SentinelTrio:
    """A primary, its replica and a sentinel watching them, on free ports."""

    root: Path
    primary: RedisServer = field(init=False)
    replica: RedisServer = field(init=False)
    sentinel: SentinelServer = field(init=False)

    def __post_init__(self) -> None:
        self.primary = RedisServer(data_dir=self.root / "primary", options=REDIS_OPTIONS)
        self.replica = RedisServer(data_dir=self.root / "replica", options=REDIS_OPTIONS)
        self.sentinel = SentinelServer(self.root / "sentinel")

    @property
    def url(self) -> str:
        """The journal's URL, as kombu spells a Sentinel URL."""
        return f"sentinel://127.0.0.1:{self.sentinel.port}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start("--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinel.start(self.primary.port)
        self.wait_replicating(self.replica, self.primary)

    def stop(self) -> None:
        """SIGKILL every server by its pid (a paused one too)."""
        self.sentinel.kill()
        for server in (self.replica, self.primary):
            if server.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.process.pid, signal.SIGCONT)
            server.kill()

    def logs(self) -> list[tuple[str, str]]:
        return [
            ("primary log", self.primary.log()),
            ("replica log", self.replica.log()),
            ("sentinel log", self.sentinel.log()),
        ]

    def restart_as_replica(self, server: RedisServer, of: RedisServer) -> None:
        """Start ``server`` again, empty, as a replica of ``of``; wait until it is in sync
        and the sentinel sees it (as a machine that came back after a failover)."""
        server.start("--replicaof", "127.0.0.1", str(of.port))
        self.wait_replicating(server, of)

    def cut_off_replica(self) -> None:
        """Make sure nothing the primary takes from now on reaches the replica.

        SIGSTOP alone would not do: the primary goes on sending, the kernel buffers what
        it sends, and the replica applies it once it runs again. So the primary also
        closes its replica's link; the stopped replica cannot connect again, and finds
        the link closed, after what was sent before it, when it runs again.
        """
        pause(self.replica)
        with client_of(self.primary) as primary:
            primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
            wait_for(
                lambda: primary.info("replication")["connected_slaves"] == 0,
                "the primary to drop its replica",
                10,
            )

    # -- What the sentinel says ----------------------------------------------------------

    def master_port(self) -> int:
        """The port the sentinel names for the primary now."""
        with client_of(self.sentinel) as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def wait_replicating(self, replica: RedisServer, primary: RedisServer) -> None:
        """Wait until ``replica`` is in sync with ``primary`` and the sentinel knows it."""

        def linked() -> bool:
            with client_of(replica) as client:
                info = client.info("replication")
            return bool(
                info.get("role") == "slave"
                and info.get("master_port") == primary.port
                and info.get("master_link_status") == "up"
            )

        def seen() -> bool:
            with client_of(self.sentinel) as client:
                found = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            # redis-py 8 gives each replica as a dict of strings; 7, as a flat list.
            replicas = [
                f if isinstance(f, dict) else dict(zip(f[::2], f[1::2], strict=True)) for f in found
            ]
            return any(
                int(fields["port"]) == replica.port
                and fields["flags"] == "slave"
                and fields["master-link-status"] == "ok"
                and int(fields["master-port"]) == primary.port
                for fields in replicas
            )

        wait_for(linked, f"the replica on {replica.port} to sync with {primary.port}", 30)
        wait_for(seen, f"the sentinel to see {replica.port} replicating {primary.port}", 30)

    def wait_failover_to(self, server: RedisServer) -> None:
        """Wait until the sentinel names ``server`` the primary and it takes writes."""

        def promoted() -> bool:
            if self.master_port() != server.port:
                return False
            with client_of(server) as client:
                if client.info("replication").get("role") != "master":
                    return False
            # As the workers' client asks: it also wants the primary neither down nor
            # objectively down in the sentinel's eyes.
            # Any: redis-py leaves Sentinel untyped.
            sentinel: Any = Sentinel([("127.0.0.1", self.sentinel.port)], socket_timeout=5)  # type: ignore[no-untyped-call]
            try:
                return bool(sentinel.discover_master(MASTER_NAME) == ("127.0.0.1", server.port))
            except MasterNotFoundError:
                return False
            finally:
                for client in sentinel.sentinels:  # Sentinel.close() came in redis-py 8
                    client.close()

        wait_for(promoted, f"the sentinel to promote the server on {server.port}", FAILOVER_WAIT)

    def wait_caught_up(self) -> int:
        """Wait until the replica has every write the primary took; return the offset."""

        def caught_up() -> int | None:
            with client_of(self.primary) as p, client_of(self.replica) as r:
                want = int(p.info("replication")["master_repl_offset"])
                have = int(r.info("replication").get("slave_repl_offset", -1))
            return want if have >= want else None

        return wait_for(caught_up, "the replica to catch up with the primary", 30)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGKILL the sentinel when the test process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
