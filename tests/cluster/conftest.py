"""Fixtures of the Redis Cluster tests: one real cluster for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.cluster import LocalCluster
from tests.cluster.world import World
from tests.conftest import PROCESS_LOGS


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters and three replicas on free ports, data in a temporary directory;
    every server is stopped by its pid at the end of the session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_cluster: LocalCluster,
    redis_client: redis.Redis,
) -> Iterator[World]:
    """A unique prefix and queue; workers started through it are killed at teardown, and
    its keys deleted on the Redis at 6379 (the broker) and on the cluster."""
    redis_cluster.wait_healthy()
    made = World(f"cl-{uuid.uuid4().hex[:10]}", tmp_path, redis_client, redis_cluster)
    request.node.stash[PROCESS_LOGS] = made.worker_logs
    try:
        yield made
    finally:
        made.close()
