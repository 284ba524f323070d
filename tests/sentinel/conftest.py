"""Fixtures of the Sentinel tests: a private primary, replica and sentinel, and workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import PROCESS_LOGS
from tests.sentinel.servers import SentinelTrio
from tests.sentinel.world import SentinelWorld
from tests.system.workers import System


@pytest.fixture
def trio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelTrio]:
    """A primary, a replica in sync with it, and a sentinel that sees both; all three
    are killed by pid at teardown."""
    servers = SentinelTrio(tmp_path / "redis")
    request.node.stash[PROCESS_LOGS] = servers.logs
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, trio: SentinelTrio, redis_client: redis.Redis
) -> Iterator[SentinelWorld]:
    """A unique prefix and queue on the main Redis (broker, results, records), the
    journal behind ``trio``'s sentinel; workers started through it are killed at
    teardown."""
    system = System(f"sen-{uuid.uuid4().hex[:10]}", tmp_path, redis_client)
    found = SentinelWorld(system, trio)
    request.node.stash[PROCESS_LOGS] = found.logs
    try:
        yield found
    finally:
        system.close()
