"""One store behaviour, three stores: every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celery_durable.journal.store import JournalStore
from celery_durable.keys import KeySpace
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore
from tests import acl
from tests.conftest import SERVERS
from tests.processes import RedisServer


@pytest.fixture(scope="session")
def acl_redis_url() -> Iterator[str]:
    """A redis-server of the suite's own with a user that has exactly the minimal ACL of
    docs/security.md (for the keys of every ``key_prefix``): its URL, as that user."""
    server = RedisServer()
    server.start()
    admin = redis.Redis(port=server.port)
    try:
        acl.add_user(admin, "t-*")
        yield acl.url(server.port)
    finally:
        admin.close()
        server.kill()


@pytest.fixture(params=["memory", *SERVERS, "redis-acl"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """``memory``, the server (``SERVERS``) the Redis store runs on, or ``redis-acl``."""
    kind: str = request.param
    return kind


@pytest.fixture
def store(request: pytest.FixtureRequest, server_kind: str) -> Iterator[JournalStore]:
    """The in-memory store, and the Redis store under a unique prefix: on Redis 7.0 and
    on Valkey 8.1 as their default user, and (``redis-acl``) on a Redis of its own as a
    user with only the documented ACL, so that every store operation shows that the ACL
    is enough."""
    if server_kind == "memory":
        yield MemoryJournalStore()
        return
    prefix: str = request.getfixturevalue("key_prefix")
    if server_kind == "redis-acl":
        url: str = request.getfixturevalue("acl_redis_url")
    else:
        url = request.getfixturevalue("redis_url")
    redis_store = RedisJournalStore.from_url(url, KeySpace(prefix))
    yield redis_store
    redis_store.close()
