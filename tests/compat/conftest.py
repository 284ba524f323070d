"""Fixtures of the compat suite: one worker for every case, killed at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.compat.world import REDIS_URL, World

_WORLD = pytest.StashKey[World]()
_LOG_START = pytest.StashKey[int]()
#: At most this much of the worker's log goes into a failed test's report.
_LOG_LIMIT = 30_000


@pytest.fixture(scope="session")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A prefix, a queue and a prefork worker (-c 2) that serve every case of the suite."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        pytest.fail(f"the compat tests need Redis at {REDIS_URL}; start redis-server")
    the_world = World(f"compat-{uuid.uuid4().hex[:10]}", tmp_path_factory.mktemp("compat"), client)
    request.session.stash[_WORLD] = the_world
    try:
        the_world.start_worker()
        yield the_world
    finally:
        the_world.close()
        client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Note where the worker's log stood when the test began."""
    the_world = item.session.stash.get(_WORLD, None)
    if the_world is not None and "world" in getattr(item, "fixturenames", ()):
        item.stash[_LOG_START] = len(the_world.worker_log())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach what the worker logged during a failed test to its report."""
    report = yield
    the_world = item.session.stash.get(_WORLD, None)
    if report.failed and the_world is not None and "world" in getattr(item, "fixturenames", ()):
        text = the_world.worker_log()[item.stash.get(_LOG_START, 0) :][-_LOG_LIMIT:]
        report.sections.append(("compat worker log (this test)", text or "(empty)"))
    return report
