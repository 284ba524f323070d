"""celery-durable under the minimal ACL of docs/security.md, and when Redis refuses it a
permission: nothing is left running for ever."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability
from tests import acl
from tests.hardening import harness
from tests.hardening.world import World
from tests.processes import RedisServer, valkey_server, wait_for

pytestmark = pytest.mark.system

TIMEOUT = 60


@pytest.fixture(params=["redis-7.0", "valkey-8.1"])
def acl_journal(request: pytest.FixtureRequest, world: World) -> Iterator[redis.Redis]:
    """A server of the test's own, with a user that has exactly the documented ACL; the
    world's journals live there (in database 1), written as that user. On Valkey 8.1,
    which has WAITAOF, every write waits for the AOF (``durable_wait_aof``) and the user
    has the rule the page adds for it. Yields the admin's client."""
    valkey = request.param.startswith("valkey")
    if valkey:
        server = RedisServer(binary=valkey_server(), options=("--appendonly", "yes"))
    else:
        server = RedisServer()
    server.start()
    admin = redis.Redis(port=server.port, db=1, decode_responses=True)
    try:
        extra = (acl.WAITAOF,) if valkey else ()
        acl.add_user(admin, f"{world.prefix}:durable:*", *extra)
        world.use_journal(acl.url(server.port, db=1), admin, wait_aof=valkey)
        yield admin
    finally:
        for worker in world.workers:  # before their Redis goes
            worker.kill()
        world.journal = world.client  # its keys go with the server
        admin.close()
        server.kill()


def test_a_whole_invocation_runs_under_the_minimal_acl(
    world: World, acl_journal: redis.Redis
) -> None:
    worker = world.start_worker()
    task_id = world.new_id()
    result = world.send(harness.TOUR, "o-1", 1.0, task_id=task_id)
    world.wait_status(task_id, "suspended")  # its timer: the wake-up component claims it
    acl_journal.script_flush()  # its next execution loads the scripts again, as the user
    value = result.get(timeout=TIMEOUT)
    assert value["charged"]["charged"] == 42
    inv = world.wait_status(task_id, "completed")
    assert [s.name for s in inv.steps] == ["reserve", "quote", "cool-off", "charge"]
    log = worker.log()
    assert "refused a command for lack of a permission" not in log, log
    assert "NoPermissionError" not in log, log
    # The one permission it lacks on purpose: CONFIG GET (docs/security.md says why).
    assert "could not read maxmemory-policy" in log

    listed = world.cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)] == [task_id]
    shown = world.cli("show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert "charge" in shown.stdout
    forgotten = world.cli("forget", task_id)
    assert forgotten.returncode == 0, forgotten.stderr


#: Permissions taken away while an invocation sleeps, and whether Redis then loses its
#: scripts: RPUSH, which the next step's script runs; or the scripts themselves, which
#: must be loaded again, and EVAL and SCRIPT LOAD, which would load them.
REFUSALS = {"in-a-script": (["-rpush"], False), "script-load": (["-eval", "-script|load"], True)}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_refused_permission_retries_the_task_until_it_is_granted(
    world: World, acl_journal: redis.Redis, refusal: str
) -> None:
    taken, flush = REFUSALS[refusal]
    worker = world.start_worker()
    task_id = world.new_id()
    result = world.send(harness.TOUR, "o-1", 2.0, task_id=task_id)
    world.wait_status(task_id, "suspended")
    acl_journal.execute_command("ACL", "SETUSER", acl.USER, *taken)
    if flush:
        acl_journal.script_flush()

    refused = "refused a command for lack of a permission"

    def met() -> bool:
        log = worker.log()
        return refused in log or "raised unexpected" in log

    wait_for(met, "the worker to meet the refusal", TIMEOUT)
    if not flush:  # the woken execution's write was refused: the task is retried
        wait_for(lambda: "Retry in" in worker.log(), "the task's retry", TIMEOUT)
    assert result.state != "FAILURE"  # no delivery failed and was acked away
    assert refused in worker.log()
    inv = world.invocation(task_id)
    # Without its scripts, nor a way to load them, the worker may not even claim the
    # wake-up: then the invocation waits, suspended, and the worker says why.
    assert inv is not None and inv.status in (("suspended", "running") if flush else ("running",))
    assert [s.name for s in inv.steps] == ["reserve", "quote", "cool-off"]

    acl_journal.execute_command("ACL", "SETUSER", acl.USER, *(t.replace("-", "+") for t in taken))
    assert result.get(timeout=TIMEOUT)["charged"]["charged"] == 42
    done = world.wait_status(task_id, "completed")
    assert [s.name for s in done.steps] == ["reserve", "quote", "cool-off", "charge"]


def test_writes_that_wait_for_a_replica_run_under_the_minimal_acl() -> None:
    # durable_wait_replicas: every journal write is followed by WAIT, as the user.
    primary = RedisServer()
    primary.start()
    replica = RedisServer(options=("--replicaof", "127.0.0.1", str(primary.port)))
    admin = redis.Redis(port=primary.port)
    store: RedisJournalStore | None = None
    try:
        replica.start()
        acl.add_user(admin, "w:*")
        wait_for(lambda: admin.info("replication")["connected_slaves"] == 1, "the replica")
        store = RedisJournalStore.from_url(
            acl.url(primary.port), KeySpace("w"), durability=Durability(replicas=1, timeout=5)
        )
        started = store.start("inv", StartRequest("t", "fp", 1, 30.0, "h:1"))
        entry = '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}'
        assert store.append("inv", started.fence, 0, entry, False) is None
        assert store.finish("inv", started.fence, "completed", '{"s":"ok","v":1}', 60) is None
        assert redis.Redis(port=replica.port).hget("w:{inv}:meta", "status") == b"completed"
    finally:
        if store is not None:
            store.close()
        admin.close()
        replica.kill()
        primary.kill()
