"""Fixtures of the flow-control system tests: a world per test, its workers always killed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import PROCESS_LOGS
from tests.flow.world import World


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[World]:
    made = World(f"fl-{uuid.uuid4().hex[:10]}", tmp_path, redis_client)
    request.node.stash[PROCESS_LOGS] = made.worker_logs
    try:
        yield made
    finally:
        made.close()
