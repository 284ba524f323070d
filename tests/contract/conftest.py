"""One store behaviour, three stores: every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_durable.journal.store import JournalStore
from celery_durable.keys import KeySpace
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore
from tests.conftest import SERVERS


@pytest.fixture(params=["memory", *SERVERS])
def server_kind(request: pytest.FixtureRequest) -> str:
    """``memory``, or the server (``SERVERS``) the Redis store runs on."""
    kind: str = request.param
    return kind


@pytest.fixture
def store(request: pytest.FixtureRequest, server_kind: str) -> Iterator[JournalStore]:
    """The in-memory store, and the Redis store on Redis 7.0 and on Valkey 8.1, under a
    unique prefix."""
    if server_kind == "memory":
        yield MemoryJournalStore()
        return
    prefix: str = request.getfixturevalue("key_prefix")
    redis_store = RedisJournalStore.from_url(request.getfixturevalue("redis_url"), KeySpace(prefix))
    yield redis_store
    redis_store.close()
