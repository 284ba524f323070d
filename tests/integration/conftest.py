"""An app per test on the real Redis (and again on Valkey), and an in-thread worker for it."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_durable.runtime import release_runtime
from tests.conftest import SERVERS


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Each integration test that uses a server runs on Redis 7.0 and on Valkey 8.1."""
    kind: str = request.param
    return kind


@pytest.fixture
def app(key_prefix: str, redis_url: str) -> Iterator[Celery]:
    """A Celery app whose queue and journal keys belong to this test alone; broker,
    result backend and journal on the ``server_kind`` server."""
    app = Celery(f"it-{key_prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=key_prefix,
        durable_key_prefix=key_prefix,
        durable_redis_url=redis_url,
        # These tests are about the Redis store: apply() journals there too.
        durable_eager_journal="redis",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )
    yield app
    release_runtime(app)
    app.close()
    # Celery's Redis result backend leaves its sockets to the garbage collector. Collect
    # them here, where their ResourceWarning is known noise, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del app
        gc.collect()


@pytest.fixture
def worker(app: Celery) -> Any:
    """Start an in-thread worker for ``app``; use after the test defined its tasks."""

    @contextmanager
    def running(**options: Any) -> Iterator[Any]:
        with start_worker(
            app, pool="solo", perform_ping_check=False, shutdown_timeout=20, **options
        ) as controller:
            yield controller

    def factory(**options: Any) -> AbstractContextManager[Any]:
        return running(**options)

    return factory
