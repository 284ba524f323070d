"""Fixtures of the system tests: a world per test whose workers are always killed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import PROCESS_LOGS, require_rabbitmq
from tests.system import harness
from tests.system.workers import System


@pytest.fixture
def system(
    request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[System]:
    """A unique prefix and queue; workers started through it are killed at teardown.

    Its broker is Redis unless the test asks for RabbitMQ, indirectly:
    ``@pytest.mark.parametrize("system", ["redis", "amqp"], indirect=True)``.
    """
    broker = getattr(request, "param", harness.REDIS)
    if broker == harness.AMQP:
        require_rabbitmq(harness.AMQP_URL)
    world = System(f"sys-{uuid.uuid4().hex[:10]}", tmp_path, redis_client, broker)
    request.node.stash[PROCESS_LOGS] = world.worker_logs
    try:
        yield world
    finally:
        world.close()
