"""Fixtures of the system tests: a world per test whose workers are always killed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from tests.system import harness
from tests.system.workers import REDIS_URL, System

_SYSTEM = pytest.StashKey[System]()


@pytest.fixture
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    """A unique prefix and queue; workers started through it are killed at teardown.

    Its broker is Redis unless the test asks for RabbitMQ, indirectly:
    ``@pytest.mark.parametrize("system", ["redis", "amqp"], indirect=True)``.
    """
    broker = getattr(request, "param", harness.REDIS)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        pytest.fail(f"the system tests need Redis at {REDIS_URL}; start redis-server")
    if broker == harness.AMQP:
        _check_rabbitmq()
    world = System(f"sys-{uuid.uuid4().hex[:10]}", tmp_path, client, broker)
    request.node.stash[_SYSTEM] = world
    try:
        yield world
    finally:
        world.close()
        client.close()


def _check_rabbitmq() -> None:
    connection = Connection(harness.AMQP_URL, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"this test needs RabbitMQ at {harness.AMQP_URL}: {exc}")
    finally:
        connection.release()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach every worker's log to the report of a failed test."""
    report = yield
    world = item.stash.get(_SYSTEM, None)
    if report.failed and world is not None:
        for name, text in world.worker_logs():
            report.sections.append((f"worker log {name}", text or "(empty)"))
    return report
