"""Fixtures of the console's tests: apps on the real Redis, consoles served by uvicorn in a
thread, a worker subprocess, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import gc
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import Invocation, get_invocation
from celery_durable.runtime import release_runtime
from tests.conftest import REDIS_URL
from tests.processes import Worker, free_port, start_worker, wait_for
from tests.web.proj import ENV_PREFIX, make_app

#: Debian's Chromium: Playwright's own browser download cannot work here.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def close_app(app: Celery) -> None:
    release_runtime(app)
    app.close()
    with warnings.catch_warnings():  # the result backend's sockets, left to the collector
        warnings.simplefilter("ignore", ResourceWarning)
        del app
        gc.collect()


def delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def app(key_prefix: str) -> Iterator[Celery]:
    """An app of ``tests.web.proj`` under this test's prefix; ``apply()`` journals in Redis."""
    app = make_app(key_prefix)
    yield app
    close_app(app)


# -- A console served by uvicorn --------------------------------------------------------------


@dataclass
class Served:
    url: str
    """Where it answers, without a trailing slash."""
    stop: Callable[[], None]


def serve(asgi: Any) -> Served:
    """Serve ``asgi`` with uvicorn in a thread of this process, on a free port."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"console-{port}", daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the console to listen", timeout=30)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return Served(f"http://127.0.0.1:{port}", stop)


# -- The module's worker ----------------------------------------------------------------------


@dataclass
class World:
    """A module's prefix, its app, its worker subprocess and its Redis."""

    prefix: str
    app: Celery
    client: redis.Redis
    worker: Worker

    def send(self, task: str, order: str) -> str:
        task_id = f"{order}-{uuid.uuid4().hex[:6]}"
        self.app.send_task(task, args=[order], task_id=task_id)
        return task_id

    def wait_status(self, task_id: str, status: str) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status == status else None

        try:
            return wait_for(reached, f"{task_id} to be {status}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.worker.log()}") from None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {REDIS_URL}; start redis-server")
    prefix = f"web-{uuid.uuid4().hex[:10]}"
    log: Path = tmp_path_factory.mktemp("web") / "worker.log"
    worker = start_worker(
        "tests.web.proj", prefix, [f"{prefix}:q"], log,
        {ENV_PREFIX: prefix, "DURABLE_TEST_REDIS_URL": REDIS_URL},
    )  # fmt: skip
    app = make_app(prefix)
    try:
        yield World(prefix, app, client, worker)
    finally:
        worker.kill()
        delete_keys(prefix)
        close_app(app)
        client.close()


# -- The browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; one per module."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the console's browser tests need Chromium at {CHROMIUM}: apt-get install chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a context of its own (no cookies shared with another test)."""
    context = browser.new_context()
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"
