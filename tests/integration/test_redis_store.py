"""The Redis journal store against real redis-servers: round trips, guards, outages."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import (
    ConfigurationError,
    DurableTask,
    JournalError,
    JournalUnavailableError,
    get_invocation,
)
from celery_durable.errors import LeaseLost
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.testing import isolated
from celery_durable.worker import WakeUps
from tests.processes import RedisServer, free_port, wait_for


def journal_app(app: Celery, url: str) -> Celery:
    app.conf.durable_redis_url = url
    release_runtime(app)
    return app


def commands_sent(spare: RedisServer, action: Callable[[], object]) -> list[str]:
    """Return the commands clients sent to ``spare`` during ``action`` (not Lua's own)."""
    client = redis.Redis(port=spare.port, decode_responses=True)
    marker = redis.Redis(port=spare.port)
    marker.ping()  # connect before monitoring, so its handshake is not seen
    with client.monitor() as monitor:
        action()
        marker.echo("end-of-action")
        sent: list[str] = []
        while (command := monitor.next_command())["command"] != "ECHO end-of-action":
            if command["client_type"] != "lua":
                sent.append(command["command"].split()[0])
    client.close()
    marker.close()
    return sent


@pytest.mark.parametrize("steps", [0, 1, 10])
def test_k_steps_cost_k_plus_two_round_trips(
    app: Celery, spare_redis: RedisServer, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_app(app, spare_redis.url)

    @app.task(base=DurableTask, bind=True, shared=False)
    def count_steps(self: DurableTask) -> int:
        return sum(self.ctx.run(f"s{i}", int, i) for i in range(steps))

    count_steps.apply().get()  # connect and load the scripts first: neither happens per task
    sent = commands_sent(spare_redis, lambda: count_steps.apply().get())
    # Start: the script, the journal and its completions in one transaction, one round
    # trip. Then one EVALSHA per step and one to finish.
    start = ["MULTI", "EVALSHA", "LRANGE", "HGETALL", "EXEC"]
    assert sent == start + ["EVALSHA"] * steps + ["EVALSHA"]

    writes: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(conn: Any, command: Any, check_health: bool = True) -> None:
        if getattr(conn, "port", None) == spare_redis.port:
            writes.append(1)  # one write of one or more commands, then their replies
        send(conn, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    count_steps.apply().get()
    assert len(writes) == 1 + steps + 1


def test_scripts_are_reloaded_after_redis_forgets_them(
    app: Celery, spare_redis: RedisServer
) -> None:
    journal_app(app, spare_redis.url)

    @app.task(base=DurableTask, bind=True, shared=False)
    def seven(self: DurableTask) -> int:
        return int(self.ctx.run("a", int, 7))

    assert seven.apply().get() == 7
    redis.Redis(port=spare_redis.port).script_flush()
    assert seven.apply().get() == 7


@pytest.mark.parametrize(
    ("policy", "refused", "warned"),
    [
        ("noeviction", False, False),
        ("volatile-lru", False, True),
        ("allkeys-lru", True, True),
    ],
)
def test_the_eviction_check_refuses_policies_that_can_evict_running_journals(
    spare_redis: RedisServer, policy: str, refused: bool, warned: bool
) -> None:
    redis.Redis(port=spare_redis.port).config_set("maxmemory-policy", policy)
    store = RedisJournalStore.from_url(spare_redis.url, KeySpace())
    if refused:
        with pytest.raises(ConfigurationError, match=f"maxmemory-policy '{policy}'.*noeviction"):
            store.check_eviction_policy("refuse")
    else:
        assert (store.check_eviction_policy("refuse") is not None) == warned
    assert (store.check_eviction_policy("warn") is not None) == warned
    assert store.check_eviction_policy("ignore") is None
    store.close()


def test_the_eviction_check_warns_and_lets_the_worker_start_when_redis_is_down() -> None:
    # A worker restarted during a Redis outage must come up and wait for Redis, as it
    # waits for its broker; the chaos run found workers exiting here instead.
    store = RedisJournalStore.from_url(f"redis://127.0.0.1:{free_port()}/0", KeySpace())
    warning = store.check_eviction_policy("refuse")
    assert warning is not None
    assert "could not reach" in warning and "noeviction" in warning
    store.close()


WORKER_APP = """
from celery import Celery
from celery_durable import DurableTask

app = Celery("refuse", broker="{broker}")
app.conf.update(durable_redis_url="{journal}", task_default_queue="{queue}")


@app.task(base=DurableTask, bind=True)
def idle(self):
    pass
"""


def test_a_worker_refuses_to_start_on_an_evicting_redis(
    spare_redis: RedisServer, tmp_path: Path, key_prefix: str, redis_url: str
) -> None:
    redis.Redis(port=spare_redis.port).config_set("maxmemory-policy", "allkeys-lru")
    (tmp_path / "evicting_app.py").write_text(
        WORKER_APP.format(broker=redis_url, journal=spare_redis.url, queue=key_prefix)
    )
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "evicting_app", "worker", "--pool=solo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "maxmemory-policy 'allkeys-lru'" in worker.stderr + worker.stdout


def test_redis_going_away_is_a_clear_error_and_nothing_is_half_written(
    app: Celery, spare_redis: RedisServer
) -> None:
    journal_app(app, spare_redis.url)
    runs: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def two_steps(self: DurableTask) -> list[str]:
        self.ctx.run("a", runs.append, "a")
        if len(runs) == 1:
            spare_redis.kill()  # Redis dies while step b runs
        self.ctx.run("b", runs.append, "b")
        return runs

    result = two_steps.apply()
    with pytest.raises(JournalError, match=r"cannot write step 1 of invocation .*unavailable"):
        result.get()
    # Redis comes back empty (it keeps nothing on disk): the next delivery starts over.
    spare_redis.start()
    assert two_steps.apply(task_id=result.id).get() == ["a", "b", "a", "b"]
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [s.name for s in inv.steps] == ["a", "b"]
    assert inv.status == "completed"


def test_a_worker_retries_a_task_until_the_journal_redis_is_back(
    app: Celery, worker: Any, spare_redis: RedisServer
) -> None:
    journal_app(app, spare_redis.url)
    app.conf.durable_eviction_check = "ignore"  # the check would refuse a Redis that is down
    runs: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def patient(self: DurableTask) -> list[str]:
        self.ctx.run("a", runs.append, "a")
        return runs

    spare_redis.kill()
    with worker():
        result = patient.delay()
        deadline = time.monotonic() + 20
        while result.state != "RETRY":
            assert time.monotonic() < deadline, f"no retry; state {result.state}"
            time.sleep(0.05)
        assert runs == []
        spare_redis.start()
        assert result.get(timeout=30) == ["a"]
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert inv.status == "completed"


REQUEST = StartRequest("t", "fp", 1, 30.0, "host:1")


def test_a_journal_left_without_its_metadata_is_not_replayed(spare_redis: RedisServer) -> None:
    store = RedisJournalStore.from_url(spare_redis.url, KeySpace("left"))
    started = store.start("inv", REQUEST)
    store.append("inv", started.fence, 0, '{"k":"run"}', False)
    store.client.delete(KeySpace("left").invocation("inv").meta)
    again = store.start("inv", StartRequest("t", "fp", 2, 30.0, "host:1"))
    assert (again.created, again.entries, again.seed) == (True, [], 2)
    store.close()


def test_a_redis_out_of_memory_is_an_outage_to_wait_out(spare_redis: RedisServer) -> None:
    store = RedisJournalStore.from_url(spare_redis.url, KeySpace("oom"))
    started = store.start("inv", REQUEST)
    store.client.config_set("maxmemory", 1)  # noeviction: every write is refused now
    with pytest.raises(JournalUnavailableError, match="OutOfMemoryError") as info:
        store.append("inv", started.fence, 0, '{"k":"run"}', False)
    assert "retried until Redis takes writes again" in str(info.value)
    store.client.config_set("maxmemory", 0)
    assert store.append("inv", started.fence, 0, '{"k":"run"}', False) is None
    store.close()


def test_a_redis_restarted_without_its_data_is_told_apart_from_a_forget(
    spare_redis: RedisServer,
) -> None:
    store = RedisJournalStore.from_url(spare_redis.url, KeySpace("restart"))
    started = store.start("inv", REQUEST)
    spare_redis.kill()
    spare_redis.start()  # it keeps nothing on disk
    with pytest.raises(LeaseLost, match="no longer exists") as info:
        store.append("inv", started.fence, 0, '{"k":"run"}', False)
    assert "restarted without persistence" in str(info.value)
    store.close()


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_fence_older_than_the_writers_is_lost_writes_and_a_newer_one_a_lost_lease(
    spare_redis: RedisServer, offset: int
) -> None:
    # A failover to a replica that missed this execution's start leaves the journal
    # with an older fence: nothing else took the invocation, so the execution must
    # retry (an outage), not stop as one whose lease another execution took.
    store = RedisJournalStore.from_url(spare_redis.url, KeySpace("fence"))
    started = store.start("inv", REQUEST)
    stored_fence = started.fence + offset
    store.client.hset(KeySpace("fence").invocation("inv").meta, "fence", stored_fence)
    behind = stored_fence < started.fence
    # The heartbeat does not give the lease up either: the next write decides.
    assert store.renew([("inv", started.fence)], 30.0) == [behind]
    expected = JournalUnavailableError if behind else LeaseLost
    with pytest.raises(expected, match=f"fence {stored_fence}, this one {started.fence}"):
        store.append("inv", started.fence, 0, '{"k":"run"}', False)
    assert store.read("inv")[1] == []  # type: ignore[index]  # nothing was written
    store.close()


SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "template",
    [
        "redis://127.0.0.1:{port}/0?password={secret}",
        "redis://user:{secret}@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?db=0&password={secret}",
    ],
)
def test_an_unreachable_redis_is_named_without_its_password(template: str) -> None:
    url = template.format(port=free_port(), secret=SECRET)
    store = RedisJournalStore.from_url(url, KeySpace("t-redact"))
    try:
        with pytest.raises(JournalUnavailableError) as raised:
            store.read("inv-1")
    finally:
        store.close()
    assert SECRET not in str(raised.value)
    assert "127.0.0.1:" in str(raised.value)


def test_a_wrong_sentinel_part_is_named_without_its_password() -> None:
    url = f"sentinel://:{SECRET}@127.0.0.1:26379;redis://:{SECRET}@127.0.0.1:6379"
    with pytest.raises(ConfigurationError, match="is not sentinel://host:port") as raised:
        RedisJournalStore.from_url(url, KeySpace("t-redact"), {"master_name": "m"})
    assert SECRET not in str(raised.value)


def test_isolated_deletes_only_its_own_keys_whatever_its_prefix_holds(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    # A prefix with glob characters: as a MATCH pattern, t[12] would match t1's keys.
    others = [f"{key_prefix}1:{{a}}:meta", f"{key_prefix}x:{{a}}:meta", f"{key_prefix}[12]x:k"]
    for key in others:
        redis_client.set(key, "another app's")
    for prefix in (f"{key_prefix}[12]", f"{key_prefix}*", f"{key_prefix}?", f"{key_prefix}\\"):
        with isolated(app, key_prefix=prefix):
            runtime_for(app).store.client.set(f"{prefix}:{{b}}:meta", "mine")
        assert redis_client.exists(f"{prefix}:{{b}}:meta") == 0, prefix
        assert redis_client.exists(*others) == len(others), prefix


def test_the_eviction_check_refuses_when_redis_will_not_tell_its_policy(
    spare_redis: RedisServer,
) -> None:
    admin = redis.Redis(port=spare_redis.port)
    admin.config_set("maxmemory-policy", "allkeys-lru")  # what the check cannot see
    admin.acl_setuser(
        "journal", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    url = f"redis://journal:pw@127.0.0.1:{spare_redis.port}/0"
    store = RedisJournalStore.from_url(url, KeySpace())
    try:
        with pytest.raises(ConfigurationError, match="could not read maxmemory-policy") as raised:
            store.check_eviction_policy("refuse")
        assert "durable_eviction_check = 'warn'" in str(raised.value)
        assert "pw@" not in str(raised.value)
        warning = store.check_eviction_policy("warn")
        assert warning is not None and "could not read maxmemory-policy" in warning
        assert store.check_eviction_policy("ignore") is None
    finally:
        store.close()
        admin.close()


def test_the_wake_up_component_says_once_that_redis_is_down_and_when_it_is_back(
    app: Celery, spare_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    journal_app(app, spare_redis.url)

    @app.task(base=DurableTask, bind=True, shared=False)
    def idle(self: DurableTask) -> None:
        pass

    spare_redis.kill()
    step = WakeUps(SimpleNamespace())
    with caplog.at_level(logging.WARNING, logger="celery_durable"):
        step.start(SimpleNamespace(app=app))
        try:
            time.sleep(3.5)  # some tries, which used to warn four times a second
            spare_redis.start()
            back = "claiming wake-ups again"
            wait_for(lambda: any(back in r.getMessage() for r in caplog.records), "recovery")
        finally:
            step.stop(SimpleNamespace(app=app))
    said = [r.getMessage() for r in caplog.records if "wake-ups" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith("celery-durable: could not claim wake-ups (1 tries so far")
    tries = re.match(r"celery-durable: claiming wake-ups again, after (\d+) failed tries", said[1])
    assert tries is not None and 2 <= int(tries[1]) <= 8, said[1]  # about one a second
