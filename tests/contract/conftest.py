"""One store behaviour, two stores: every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celery_durable.journal.store import JournalStore
from celery_durable.keys import KeySpace
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore
from tests import acl
from tests.conftest import REDIS_URL
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


@pytest.fixture(params=["memory", "redis", "redis-acl"])
def store(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[JournalStore]:
    """The in-memory store, and the Redis store on the real Redis under a unique prefix:
    as its default user, and (``redis-acl``) on a Redis of its own as a user with only
    the documented ACL, so that every store operation shows that the ACL is enough."""
    if request.param == "memory":
        yield MemoryJournalStore()
        return
    url = request.getfixturevalue("acl_redis_url") if request.param == "redis-acl" else REDIS_URL
    redis_store = RedisJournalStore.from_url(url, KeySpace(key_prefix))
    yield redis_store
    redis_store.close()
