"""Fixtures of the awaitables system tests: a world per test, its workers always killed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.awaitables import names
from tests.awaitables.world import World
from tests.conftest import PROCESS_LOGS, require_rabbitmq


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[World]:
    """A unique prefix and queues on the Redis broker, or on RabbitMQ when the test asks
    indirectly: ``@pytest.mark.parametrize("world", ["redis", "amqp"], indirect=True)``.

    A test that needs the children on a queue of their own marks itself ``split``.
    """
    broker = getattr(request, "param", names.REDIS)
    if broker == names.AMQP:
        require_rabbitmq(names.AMQP_URL)
    split = request.node.get_closest_marker("split") is not None
    made = World(f"aw-{uuid.uuid4().hex[:10]}", tmp_path, redis_client, broker, split=split)
    request.node.stash[PROCESS_LOGS] = made.worker_logs
    try:
        yield made
    finally:
        made.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "split: children run on a queue of their own")
