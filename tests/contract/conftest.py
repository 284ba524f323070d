"""One store behaviour, two stores: every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_durable.journal.store import JournalStore
from celery_durable.keys import KeySpace
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[JournalStore]:
    """The in-memory store, and the Redis store on the real Redis under a unique prefix."""
    if request.param == "memory":
        yield MemoryJournalStore()
        return
    redis_store = RedisJournalStore.from_url(REDIS_URL, KeySpace(key_prefix))
    yield redis_store
    redis_store.close()
