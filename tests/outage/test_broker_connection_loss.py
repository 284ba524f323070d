"""A worker whose broker connection is lost while it holds a message, and comes back.

Celery 5.7 ends such a worker: after a lost connection its consumer calls
``connection.collect()`` and then ``connection.close()``. On kombu's Redis transport,
``collect()`` leaves the channel half closed (its close raised on the dead socket)
and drops the transport's client; ``close()`` then closes the channel again, which
tries to restore the unacknowledged messages through the dropped client and raises
``AttributeError: 'NoneType' object has no attribute 'hostname'``. That is no
connection error, so the consumer does not retry: "Unrecoverable error", exit 1.
It needs a message the worker has not acknowledged at that moment: under
``acks_late`` (every ``DurableTask``), a task in a pool child (prefork, threads) or a
prefetched one. celery_durable.worker turns the second close into a no-op.

The broker is the test's own redis-server (with its AOF: the queue and the journal
survive the restart), killed while a step of the task runs and started again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.outage import names
from tests.outage.conftest import SharedRedis
from tests.outage.world import World
from tests.processes import wait_for

pytestmark = pytest.mark.system

#: The kombu/Celery error that ended the worker.
CRASH = "Unrecoverable error"


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[SharedRedis]:
    """The outage tests' private Redis, with an AOF synced on every write: a restart in
    place keeps the queue, the unacked messages and the journal."""
    server = SharedRedis(
        data_dir=tmp_path / "shared-redis",
        options=("--appendonly", "yes", "--appendfsync", "always"),
    )
    server.start("--maxmemory-policy", "noeviction")
    try:
        yield server
    finally:
        server.client.close()
        server.kill()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_survives_losing_its_broker_while_a_task_runs(
    world: World, shared_redis: SharedRedis, pool: str
) -> None:
    # Two processes (threads), one task: the worker waits for a second message (BRPOP)
    # while it holds the first, unacknowledged.
    worker = world.start_worker(pool, concurrency=2)
    lost = "consumer: Connection to broker lost"
    for round_ in range(3):  # each a fresh loss with a message unacknowledged
        task_id = world.new_task_id()
        world.block(task_id, "step-1")
        world.send(names.PIPELINE, task_id, f"order-{round_}")
        world.wait_entered(task_id, "step-1")

        shared_redis.kill()
        world.wait_log(worker, lost, count=round_ + 1)
        shared_redis.start("--maxmemory-policy", "noeviction")
        world.release(task_id, "step-1")

        world.wait_outcome(task_id, "SUCCESS")
        assert worker.alive(), f"the worker exited with {worker.process.returncode}"
        assert CRASH not in worker.log()
        assert world.runs(task_id, "step-0", "step-1", "step-2") == {
            "step-0": 1,
            "step-1": 1,
            "step-2": 1,
        }
        assert world.invocation(task_id).status == "completed"
    wait_for(worker.alive, "the worker to be alive")
