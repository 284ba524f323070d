"""Redis outages when the journal, the broker and the result backend are ONE Redis.

The default layout: ``durable_redis_url`` is the broker's Redis. When that Redis refuses
writes, the journal write fails AND the Celery retry that should carry the work on
cannot be published. Plain Celery then raises ``Reject(requeue=False)``, which deletes
the message (the invocation stays ``running`` for ever). ``DurableTask.retry`` tries to
publish again until the broker takes it (and to release the lease meanwhile); a retry
that ended an execution carries that execution's fence
(``ENDED_FENCE_HEADER``), so the next start does not count it as a worker death.

Each test has a private redis-server (broker, backend and journal at once) and real
worker subprocesses; the step functions count their runs in the main Redis (6379),
which never refuses writes. Writes are refused with ``maxmemory 1`` under
``noeviction`` (OOM errors; deletes and reads still work) or ``min-replicas-to-write 1``
(NOREPLICAS: every write is refused).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.outage import names
from tests.outage.conftest import SharedRedis
from tests.outage.world import World
from tests.processes import Worker, wait_for

pytestmark = pytest.mark.system

COULD_NOT_PUBLISH = "could not publish its retry"
STEPS = ("step-0", "step-1", "step-2")
#: Well below the workers' visibility timeout (60 s): a message that comes back within
#: it was handed back or retried, not restored by the transport.
RESULT_TIMEOUT = 30.0


def attempts(world: World, task_id: str) -> list[tuple[str, str, int]]:
    return [(s.name, s.status, s.attempts) for s in world.invocation(task_id).steps]


def assert_pipeline_result(value: dict[str, Any], order: str, step_1_run: int) -> None:
    assert value["order"] == order
    assert value["total"] == 60
    assert [(s["index"], s["amount"], s["run"]) for s in value["steps"]] == [
        (0, 10, 1),
        (1, 20, step_1_run),
        (2, 30, 1),
    ]


def assert_nothing_left_in_the_broker(world: World) -> None:
    # The late ack comes after task_postrun: poll for it.
    wait_for(
        lambda: world.unacked() == 0 and world.queued() == 0,
        "the broker to hold no message of the test (all acked, none requeued)",
        timeout=10,
    )


def stays_alive(worker: Worker, seconds: float) -> bool:
    """Poll the worker for ``seconds``; False as soon as it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not worker.alive():
            return False
        time.sleep(0.05)
    return worker.alive()


# -- 1. Writes refused while a step runs: the step's journal write fails -------------------


@pytest.mark.parametrize("how", ["oom", "noreplicas"])
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_step_whose_journal_write_is_refused_runs_again_once_redis_takes_writes(
    world: World, shared_redis: SharedRedis, pool: str, how: str
) -> None:
    worker = world.start_worker(pool)
    task_id = world.new_task_id()
    world.block(task_id, "step-1")
    world.send(names.PIPELINE, task_id, "order-1")
    world.wait_entered(task_id, "step-1")

    shared_redis.refuse_writes(how)
    world.release(task_id, "step-1")  # step-1 returns; its journal write is refused
    world.wait_log(worker, "cannot write step 1 of invocation")
    # The retry cannot be published either: the worker keeps trying, in process.
    world.wait_log(worker, COULD_NOT_PUBLISH, count=3)
    assert world.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 0}
    during = world.invocation(task_id)  # reads still work
    assert during.status == "running"
    assert [s.name for s in during.steps] == ["step-0"]
    assert world.outcomes(task_id) == []  # the delivery has not ended: nothing acked
    assert world.unacked() == 1
    shared_redis.accept_writes()

    value = world.result(task_id).get(timeout=RESULT_TIMEOUT)

    # step-1 was in flight (ran, not journaled): it runs again; nothing else does.
    assert_pipeline_result(value, "order-1", step_1_run=2)
    assert world.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 2, "step-2": 1}
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == value
    # The outage is no worker death: the retry carried the ended execution's fence.
    assert attempts(world, task_id) == [
        ("step-0", "completed", 1),
        ("step-1", "completed", 1),
        ("step-2", "completed", 1),
    ]
    meta = world.meta(task_id)
    assert meta.get("deaths", "0") == "0"  # a finished one keeps a count above 0 only
    first, retry = world.receipts(task_id)
    assert (first["retries"], first["ended_fence"]) == (0, None)
    # The first execution's fence: the one before the retry's start raised it.
    first_fence = int(meta["fence"]) - 1
    assert (retry["retries"], retry["ended_fence"], retry["redelivered"]) == (1, first_fence, False)
    world.wait_outcome(task_id, "SUCCESS")  # recorded after the result is stored
    assert [o["state"] for o in world.outcomes(task_id)] == ["RETRY", "SUCCESS"]
    assert world.result(task_id).state == "SUCCESS"
    assert_nothing_left_in_the_broker(world)
    assert worker.alive()


# -- 2. Writes refused right when the task publishes its Celery retry -------------------


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_step_retry_whose_publish_is_refused_is_published_once_redis_takes_writes(
    world: World, shared_redis: SharedRedis, pool: str
) -> None:
    worker = world.start_worker(pool)
    task_id = world.new_task_id()
    # The worker's before_task_publish receiver refuses writes right before it
    # publishes the retry of the failed step: after the failed attempt is journaled.
    world.refuse_on_publish(task_id)
    world.send(names.FLAKY, task_id, "order-2")
    world.wait_log(worker, COULD_NOT_PUBLISH, count=3)
    assert world.refused(task_id) == 1
    assert shared_redis.refuses_writes()
    assert world.runs(task_id, "prep", "flaky", "last") == {"prep": 1, "flaky": 1, "last": 0}
    assert attempts(world, task_id) == [("prep", "completed", 1), ("flaky", "retrying", 1)]
    assert world.outcomes(task_id) == []
    assert world.unacked() == 1
    shared_redis.accept_writes()

    value = world.result(task_id).get(timeout=RESULT_TIMEOUT)

    assert value["order"] == "order-2"
    assert [s.get("run") for s in value["steps"]] == [1, 2, 1]
    assert world.runs(task_id, "prep", "flaky", "last") == {"prep": 1, "flaky": 2, "last": 1}
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == value
    # One failed attempt and the one that worked; no death.
    assert attempts(world, task_id) == [
        ("prep", "completed", 1),
        ("flaky", "completed", 2),
        ("last", "completed", 1),
    ]
    assert world.meta(task_id).get("deaths", "0") == "0"
    first, retry = world.receipts(task_id)
    assert first["retries"] == 0
    assert retry["retries"] == 1
    assert retry["eta"] is not None  # the policy's delay, as published once Redis was back
    world.wait_outcome(task_id, "SUCCESS")  # recorded after the result is stored
    assert [o["state"] for o in world.outcomes(task_id)] == ["RETRY", "SUCCESS"]
    assert_nothing_left_in_the_broker(world)
    assert worker.alive()


# -- 3. A long outage: waited out in process, never handed back ------------------------


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_long_outage_is_waited_out_in_process_and_counts_no_death(
    world: World, shared_redis: SharedRedis, pool: str
) -> None:
    """While Redis refuses writes the retry cannot be published. The worker tries again,
    with a growing pause, instead of handing the message back to a Redis that refuses
    that too (kombu's requeue, refused with OOM, would kill the worker) or acking it
    away. Each try also tries again to release the lease: once Redis takes writes the
    lease is released and the retry published, so the outage is no death, not even for a
    step whose policy allows one attempt (``max_retries=0``)."""
    worker = world.start_worker(pool)
    task_id = world.new_task_id()
    world.block(task_id, "step-1")
    world.send(names.PIPELINE_ONE_ATTEMPT, task_id, "order-5")
    world.wait_entered(task_id, "step-1")

    shared_redis.refuse_writes()
    world.release(task_id, "step-1")
    wait_for(
        lambda: world.log_count(worker, COULD_NOT_PUBLISH) >= 3,
        "three refused publishes (0.5, 1, 2 s apart)",
        timeout=30,
    )
    assert stays_alive(worker, 1.0)
    assert world.outcomes(task_id) == []  # the delivery has not ended: nothing acked
    assert world.unacked() == 1
    shared_redis.accept_writes()

    value = world.result(task_id).get(timeout=RESULT_TIMEOUT)

    assert_pipeline_result(value, "order-5", step_1_run=2)
    assert world.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 2, "step-2": 1}
    assert attempts(world, task_id) == [
        ("step-0", "completed", 1),
        ("step-1", "completed", 1),
        ("step-2", "completed", 1),
    ]
    world.wait_outcome(task_id, "SUCCESS")  # recorded after the result is stored
    assert [o["state"] for o in world.outcomes(task_id)] == ["RETRY", "SUCCESS"]
    assert_nothing_left_in_the_broker(world)
    assert worker.alive()
