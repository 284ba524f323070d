"""Fixtures every test level shares: the real Redis, a unique key prefix, a spare Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from tests.processes import RedisServer

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {REDIS_URL}; start redis-server")
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(redis_client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def spare_redis() -> Iterator[RedisServer]:
    """A running redis-server on a free port, killed after the test."""
    spare = RedisServer()
    spare.start()
    yield spare
    spare.kill()


def require_rabbitmq(url: str) -> None:
    """Fail the test, saying why, unless RabbitMQ answers at ``url``."""
    connection = Connection(url, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"this test needs RabbitMQ at {url}: {exc}")
    finally:
        connection.release()


#: Where a test's fixture leaves how to read its subprocesses' logs (name, text).
PROCESS_LOGS = pytest.StashKey[Callable[[], list[tuple[str, str]]]]()
#: At most this much of each log goes into a failed test's report.
_LOG_LIMIT = 200_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the logs of a failed test's workers and servers to its report."""
    report = yield
    logs = item.stash.get(PROCESS_LOGS, None)
    if report.failed and logs is not None:
        for name, text in logs():
            report.sections.append((name, text[-_LOG_LIMIT:] or "(empty)"))
    return report
