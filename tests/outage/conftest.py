"""Fixtures of the outage tests: a private Redis shared by broker, backend and journal."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL, free_port
from tests.outage.world import World

_WORLD = pytest.StashKey[World]()


class SharedRedis:
    """A redis-server of the test's own, on a free port, its data in a temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="outage-redis-"))
        self.log = self.dir / "redis.log"
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--logfile", str(self.log),
                "--maxmemory-policy", "noeviction",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def refuse_writes(self, how: str = "oom") -> None:
        """Refuse writes from now on, as a full Redis under noeviction does (``oom``:
        writes that may use memory get OOM errors; reads and deletes still work), or a
        primary that lost its replicas (``noreplicas``: every write gets NOREPLICAS)."""
        if how == "oom":
            self.client.config_set("maxmemory-policy", "noeviction")
            self.client.config_set("maxmemory", 1)
        elif how == "noreplicas":
            self.client.config_set("min-replicas-to-write", 1)
        else:
            raise ValueError(how)

    def accept_writes(self) -> None:
        self.client.config_set("maxmemory", 0)
        self.client.config_set("min-replicas-to-write", 0)

    def refuses_writes(self) -> bool:
        return str(self.client.config_get("maxmemory").get("maxmemory")) != "0"

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM to its pid; no save is configured
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def shared_redis() -> Iterator[SharedRedis]:
    server = SharedRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, shared_redis: SharedRedis
) -> Iterator[World]:
    records = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        records.ping()
    except redis.ConnectionError:
        records.close()
        pytest.fail(f"the outage tests keep their records in Redis at {REDIS_URL}")
    world = World(f"out-{uuid.uuid4().hex[:10]}", tmp_path, shared_redis.url, records)
    request.node.stash[_WORLD] = world
    try:
        yield world
    finally:
        world.close()
        records.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach every worker's log to the report of a failed test."""
    report = yield
    world = item.stash.get(_WORLD, None)
    if report.failed and world is not None:
        for name, text in world.worker_logs():
            report.sections.append((f"worker log {name}", text or "(empty)"))
    return report
