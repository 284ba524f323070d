"""Fixtures of the awaitables system tests: a world per test, its workers always killed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from tests.awaitables import names
from tests.awaitables.world import REDIS_URL, World

_WORLD = pytest.StashKey[World]()


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A unique prefix and queues on the Redis broker, or on RabbitMQ when the test asks
    indirectly: ``@pytest.mark.parametrize("world", ["redis", "amqp"], indirect=True)``.

    A test that needs the children on a queue of their own marks itself ``split``.
    """
    broker = getattr(request, "param", names.REDIS)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        pytest.fail(f"these tests need Redis at {REDIS_URL}")
    if broker == names.AMQP:
        connection = Connection(names.AMQP_URL, connect_timeout=5)
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as exc:
            pytest.fail(f"this test needs RabbitMQ at {names.AMQP_URL}: {exc}")
        finally:
            connection.release()
    split = request.node.get_closest_marker("split") is not None
    made = World(f"aw-{uuid.uuid4().hex[:10]}", tmp_path, client, broker, split=split)
    request.node.stash[_WORLD] = made
    try:
        yield made
    finally:
        made.close()
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "split: children run on a queue of their own")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach every worker's log to the report of a failed test."""
    report = yield
    made = item.stash.get(_WORLD, None)
    if report.failed and made is not None:
        for name, text in made.worker_logs():
            report.sections.append((f"worker log {name}", text or "(empty)"))
    return report
