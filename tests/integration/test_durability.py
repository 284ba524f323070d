"""Durability levels: a step waits for replicas (WAIT) in the same round trip as its write."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import ConfigurationError, DurableTask, JournalUnavailableError
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability
from tests.integration.test_redis_store import commands_sent
from tests.processes import RedisServer, valkey_server

REQUEST = StartRequest("t", "fp", 1, 30.0, "host:1")
ENTRY = '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}'


@pytest.fixture
def replica(spare_redis: RedisServer) -> Iterator[RedisServer]:
    """A replica of ``spare_redis`` (the same server), in sync before the test goes on."""
    follower = RedisServer(binary=spare_redis.binary)
    follower.start("--replicaof", "127.0.0.1", str(spare_redis.port))
    client = redis.Redis(port=follower.port, decode_responses=True)
    deadline = time.monotonic() + 20
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    client.close()
    yield follower
    follower.kill()


def store_on(spare: RedisServer, durability: Durability) -> RedisJournalStore:
    return RedisJournalStore.from_url(spare.url, KeySpace("dur"), durability=durability)


def test_a_step_waits_for_its_replica_in_the_same_round_trip(
    spare_redis: RedisServer, replica: RedisServer
) -> None:
    store = store_on(spare_redis, Durability(replicas=1, timeout=5))
    started = store.start("inv", REQUEST)
    sent = commands_sent(spare_redis, lambda: store.append("inv", started.fence, 0, ENTRY, False))
    assert sent == ["EVALSHA", "WAIT"]
    written: list[Any] = []
    original = store._lean.connection().send_packed_command  # type: ignore[union-attr]

    def counting(command: Any, check_health: bool = True) -> None:
        written.append(command)
        original(command, check_health)

    store._lean.connection().send_packed_command = counting  # type: ignore[union-attr]
    store.append("inv", started.fence, 1, ENTRY, False)
    assert len(written) == 1  # one write of both commands: one round trip
    on_replica = redis.Redis(port=replica.port, decode_responses=True)
    assert on_replica.llen(KeySpace("dur").invocation("inv").journal) == 2
    on_replica.close()
    store.close()


def test_a_write_no_replica_acknowledged_in_time_is_not_durable(spare_redis: RedisServer) -> None:
    plain = store_on(spare_redis, Durability())
    started = plain.start("inv", REQUEST)
    plain.close()
    store = store_on(spare_redis, Durability(replicas=1, timeout=0.2))
    with pytest.raises(JournalUnavailableError, match="0 of durable_wait_replicas=1"):
        store.append("inv", started.fence, 0, ENTRY, False)
    # The primary has it: the next execution finds it, and the step is not run again.
    stored = store.read("inv")
    assert stored is not None and len(stored[1]) == 1
    # A start is not durable either: it would hand the body an entry no replica has.
    with pytest.raises(JournalUnavailableError, match=r"start invocation inv: .* 0 of"):
        store.start("inv", REQUEST)
    store.close()


def test_a_start_that_is_not_durable_gives_its_lease_back(spare_redis: RedisServer) -> None:
    # Or the task's retry would find the invocation busy and wait the lease out.
    store = store_on(spare_redis, Durability(replicas=1, timeout=0.2))
    with pytest.raises(JournalUnavailableError, match="start invocation inv"):
        store.start("inv", REQUEST)
    meta = store.client.hgetall(KeySpace("dur").invocation("inv").meta)
    assert (meta["fence"], meta.get("lease"), meta["deaths"]) == ("1", None, "0")
    store.close()


def test_a_task_whose_step_is_not_durable_is_retried_until_it_is(
    app: Celery, worker: Any, spare_redis: RedisServer
) -> None:
    app.conf.update(
        durable_redis_url=spare_redis.url, durable_wait_replicas=1, durable_wait_timeout=0.2,
        durable_eviction_check="ignore",
    )  # fmt: skip
    release_runtime(app)
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def careful(self: DurableTask) -> int:
        return int(self.ctx.run("count", lambda: runs.append(1) or len(runs)))

    follower = RedisServer(binary=spare_redis.binary)
    with worker():
        result = careful.delay()
        deadline = time.monotonic() + 20
        while result.state != "RETRY":  # no replica: the step's write is not durable
            assert time.monotonic() < deadline, f"no retry; state {result.state}"
            time.sleep(0.05)
        follower.start("--replicaof", "127.0.0.1", str(spare_redis.port))
        try:
            assert result.get(timeout=60) == 1
        finally:
            follower.kill()
    assert runs == [1]  # the write survived on the primary: the step ran once


@pytest.mark.parametrize("server_kind", ["redis"])  # Redis 7.0: WAITAOF came in 7.2
def test_waiting_for_the_aof_needs_a_redis_that_has_waitaof(spare_redis: RedisServer) -> None:
    version = redis.Redis(port=spare_redis.port).info("server")["redis_version"]
    assert version.startswith("7.0."), version
    store = store_on(spare_redis, Durability(aof=True))
    with pytest.raises(ConfigurationError, match=r"WAITAOF.*7\.2"):
        store.start("inv", REQUEST)
    plain = store_on(spare_redis, Durability())
    started = plain.start("inv2", REQUEST)
    plain.close()
    with pytest.raises(ConfigurationError, match=r"WAITAOF.*7\.2"):
        store.append("inv2", started.fence, 0, ENTRY, False)
    store.close()


def test_a_step_waits_for_the_aof_in_the_same_round_trip(tmp_path: Path) -> None:
    # Valkey 8.1 has WAITAOF, with its AOF on.
    server = RedisServer(
        data_dir=tmp_path / "aof", options=("--appendonly", "yes"), binary=valkey_server()
    )
    server.start()
    try:
        store = store_on(server, Durability(aof=True))
        started = store.start("inv", REQUEST)
        sent = commands_sent(server, lambda: store.append("inv", started.fence, 0, ENTRY, False))
        assert sent == ["EVALSHA", "WAITAOF"]
        stored = store.read("inv")
        assert stored is not None and stored[1] == [ENTRY]
        store.close()
    finally:
        server.kill()


def test_the_durability_settings_are_validated() -> None:
    from celery_durable.settings import DurableSettings

    with pytest.raises(ConfigurationError, match="durable_wait_replicas=-1"):
        DurableSettings.from_conf({"durable_wait_replicas": -1})
    with pytest.raises(ConfigurationError, match="durable_wait_aof='yes'"):
        DurableSettings.from_conf({"durable_wait_aof": "yes"})
