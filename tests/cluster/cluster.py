"""A real Redis Cluster on free ports: three masters and three replicas, started by a test.

Every node is a ``redis-server`` subprocess with its data (``nodes-<port>.conf``) in a
temporary directory; ``redis-cli --cluster create`` joins them and assigns the slots.
Teardown stops every server by its pid.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis
from redis.cluster import RedisCluster

from tests.processes import wait_for

T = TypeVar("T")

#: A node's cluster bus listens on its port + 10000.
BUS_OFFSET = 10000


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    """``count`` ports that are free, and whose cluster bus port (+10000) is free too."""
    found: list[int] = []
    for port in random.sample(range(20000, 30000), 2000):
        if _port_is_free(port) and _port_is_free(port + BUS_OFFSET):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"could not find {count} free port pairs for a Redis Cluster")


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    role: str
    """``master`` or ``slave``."""
    master_id: str
    """The node id of a replica's master (``-`` for a master)."""
    slots: tuple[tuple[int, int], ...]
    connected: bool


@dataclass
class LocalCluster:
    """Masters and replicas of a Redis Cluster of the test's own."""

    directory: Path
    masters: int = 3
    replicas_per_master: int = 1
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The URL of one node: what ``durable_redis_url`` names."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    # -- Life -----------------------------------------------------------------------------

    def start(self) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed to start a Redis Cluster")
        self.ports = free_ports(self.masters * (1 + self.replicas_per_master))
        for port in self.ports:
            log = (self.directory / f"redis-{port}.log").open("wb")
            self.processes[port] = subprocess.Popen(
                [
                    server, "--port", str(port), "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf", "--dir", str(self.directory),
                    "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            log.close()
        for port in self.ports:
            wait_for(lambda port=port: self._pings(port), f"redis-server on port {port}")
        created = subprocess.run(
            [
                cli, "--cluster", "create", *[f"127.0.0.1:{port}" for port in self.ports],
                "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
            )
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every server by its pid: SIGTERM, then SIGKILL if it lingers."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    # -- Looking at it --------------------------------------------------------------------

    def client(self, port: int) -> redis.Redis:
        """A plain client of one node (not cluster-aware)."""
        return redis.Redis(port=port, decode_responses=True, socket_timeout=10)

    def _pings(self, port: int) -> bool:
        node = self.client(port)
        try:
            return bool(node.ping())
        except redis.ConnectionError:
            return False
        finally:
            node.close()

    def raw(self, port: int, *command: str) -> object:
        """Send one command to one node and return its reply unparsed (INFO and CLUSTER
        NODES as text)."""
        conn = redis.Connection(port=port, decode_responses=True, socket_timeout=10)
        try:
            conn.send_command(*command)
            reply: object = conn.read_response()
            return reply
        finally:
            conn.disconnect()

    def info(self, port: int, section: str) -> str:
        command = ("CLUSTER", "INFO") if section == "cluster" else ("INFO", section)
        return str(self.raw(port, *command))

    def nodes(self, port: int | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as one node (the first by default) sees them."""
        text = str(self.raw(port or self.ports[0], "CLUSTER", "NODES"))
        return [_node_of(line) for line in text.splitlines() if line.strip()]

    def master_of_slot(self, slot: int) -> ClusterNode:
        for node in self.nodes():
            if node.role == "master" and any(lo <= slot <= hi for lo, hi in node.slots):
                return node
        raise AssertionError(f"no master holds slot {slot}")

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        return [n for n in self.nodes() if n.role == "slave" and n.master_id == master.node_id]

    def key_slot(self, key: str) -> int:
        return int(str(self.raw(self.ports[0], "CLUSTER", "KEYSLOT", key)))

    def healthy(self) -> bool:
        """Every node says cluster_state:ok, sees every other one, and every replica's
        link to its master is up."""
        for port in self.ports:
            try:
                if "cluster_state:ok" not in self.info(port, "cluster"):
                    return False
                seen = self.nodes(port)
                if len(seen) != len(self.ports) or not all(n.connected for n in seen):
                    return False
                replication = self.info(port, "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False
            except redis.RedisError:
                return False
        masters = [n for n in self.nodes() if n.role == "master"]
        return (
            len(masters) == self.masters
            and sum(hi - lo + 1 for m in masters for lo, hi in m.slots) == 16384
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_for(self.healthy, "the Redis Cluster to be ok on every node", timeout)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` on every master."""
        client = RedisCluster.from_url(self.url, decode_responses=True)
        try:
            for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
                client.delete(key)
        finally:
            close_cluster_client(client)

    # -- Changing it ----------------------------------------------------------------------

    def migrate(self, slot: int, target: ClusterNode) -> Migration:
        """Start moving ``slot`` to the master ``target``; ``finish()`` ends it."""
        return Migration(self, slot, target)

    def failover(self, master: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """``CLUSTER FAILOVER`` on a replica of ``master``: wait until it is the master of
        the same slots and the cluster is ok again; return the new master."""
        [replica, *_] = self.replicas_of(master)
        assert self.raw(replica.port, "CLUSTER", "FAILOVER") == "OK"

        def promoted() -> ClusterNode | None:
            with contextlib.suppress(redis.RedisError):
                for port in self.ports:
                    seen = {n.node_id: n.role for n in self.nodes(port)}
                    if (seen[replica.node_id], seen[master.node_id]) != ("master", "slave"):
                        return None
                return {n.node_id: n for n in self.nodes()}[replica.node_id]
            return None

        new = wait_for(promoted, f"replica {replica.port} to take over from {master.port}", timeout)
        self.wait_healthy(timeout)
        return new


class Migration:
    """A slot moving from one master to another, by hand: SETSLOT IMPORTING/MIGRATING,
    MIGRATE of its keys (all at once, or some now and the rest later), SETSLOT NODE."""

    def __init__(self, cluster: LocalCluster, slot: int, target: ClusterNode) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.master_of_slot(slot)
        self.target = target
        assert self.source.node_id != target.node_id
        raw = cluster.raw
        assert raw(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", self.source.node_id)
        assert raw(self.source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target.node_id)

    def keys_left(self) -> list[str]:
        found = self.cluster.raw(
            self.source.port, "CLUSTER", "GETKEYSINSLOT", str(self.slot), "1000"
        )
        return [str(key) for key in found] if isinstance(found, list) else []

    def move(self, *keys: str) -> None:
        """MIGRATE ``keys`` (default: every key left in the slot) to the target."""
        keys = keys or tuple(self.keys_left())
        if keys:
            reply = self.cluster.raw(
                self.source.port, "MIGRATE", "127.0.0.1", str(self.target.port), "", "0",
                "5000", "KEYS", *keys,
            )  # fmt: skip
            assert reply in ("OK", "NOKEY"), reply

    def finish(self) -> None:
        """Move what is left, then give the slot to the target on every master."""
        self.move()
        assert self.keys_left() == []
        masters = [n for n in self.cluster.nodes() if n.role == "master"]
        # The target first, then the source, as the Redis Cluster specification says.
        for node in sorted(masters, key=lambda n: (n != self.target, n != self.source)):
            setslot = ("CLUSTER", "SETSLOT", str(self.slot), "NODE", self.target.node_id)
            assert self.cluster.raw(node.port, *setslot) == "OK"

        def agreed() -> bool:
            owners = {
                _slot_owner(self.cluster.nodes(port), self.slot) for port in self.cluster.ports
            }
            return owners == {self.target.node_id}

        wait_for(agreed, f"every node to see slot {self.slot} on {self.target.port}")
        self.cluster.wait_healthy()


def _node_of(line: str) -> ClusterNode:
    parts = line.split()
    node_id, address, flags, master_id = parts[0], parts[1], parts[2].split(","), parts[3]
    slots: list[tuple[int, int]] = []
    for part in parts[8:]:
        if part.startswith("["):  # a slot being migrated or imported
            continue
        lo, _, hi = part.partition("-")
        slots.append((int(lo), int(hi or lo)))
    port = int(address.split("@")[0].rsplit(":", 1)[1])
    role = "master" if "master" in flags else "slave"
    return ClusterNode(node_id, port, role, master_id, tuple(slots), parts[7] == "connected")


def close_cluster_client(client: RedisCluster) -> None:
    """Close a cluster client and its sockets.

    ``RedisCluster.close()`` alone leaves the sockets of a client made ``from_url`` open
    until they are garbage collected: each node's ``Redis`` is given a connection pool,
    so closing it does not disconnect the pool (redis-py 8.1).
    """
    client.disconnect_connection_pools()
    client.close()


def _slot_owner(nodes: list[ClusterNode], slot: int) -> str | None:
    for node in nodes:
        if node.role == "master" and any(lo <= slot <= hi for lo, hi in node.slots):
            return node.node_id
    return None
