"""Fixtures of the outage tests: a private Redis shared by broker, backend and journal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import pytest
import redis

from tests.conftest import PROCESS_LOGS
from tests.outage.world import World
from tests.processes import RedisServer


class SharedRedis(RedisServer):
    """The test's own redis-server, on a free port with its log in a temp dir, that
    can be made to refuse writes."""

    @cached_property
    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def refuse_writes(self, how: str = "oom") -> None:
        """Refuse writes from now on, as a full Redis under noeviction does (``oom``:
        writes that may use memory get OOM errors; reads and deletes still work), or a
        primary that lost its replicas (``noreplicas``: every write gets NOREPLICAS)."""
        if how == "oom":
            self.client.config_set("maxmemory-policy", "noeviction")
            self.client.config_set("maxmemory", 1)
        elif how == "noreplicas":
            self.client.config_set("min-replicas-to-write", 1)
        else:
            raise ValueError(how)

    def accept_writes(self) -> None:
        self.client.config_set("maxmemory", 0)
        self.client.config_set("min-replicas-to-write", 0)

    def refuses_writes(self) -> bool:
        return str(self.client.config_get("maxmemory").get("maxmemory")) != "0"


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[SharedRedis]:
    server = SharedRedis(data_dir=tmp_path / "shared-redis")
    server.start("--maxmemory-policy", "noeviction")
    try:
        yield server
    finally:
        server.client.close()
        server.kill()


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    shared_redis: SharedRedis,
    redis_client: redis.Redis,
) -> Iterator[World]:
    """The test's world; its records go to the suite's Redis (``redis_client``)."""
    world = World(f"out-{uuid.uuid4().hex[:10]}", tmp_path, shared_redis.url, redis_client)
    request.node.stash[PROCESS_LOGS] = world.worker_logs
    try:
        yield world
    finally:
        world.close()
