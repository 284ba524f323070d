"""The core scenarios with real workers, journals on a three-master Redis Cluster.

Broker and result backend are the Redis at 6379 (a unique prefix per test); the
journal is on the cluster (``durable_redis_cluster = True``, ``durable_redis_url`` the
URL of one node). Every test asserts what ran (counted in the Redis at 6379, outside
the journal) and what the journal holds (``get_invocation``).
"""

from __future__ import annotations

import itertools
import json
import signal
from typing import Any

import pytest

import celery_durable
from celery_durable import Invocation
from tests.cluster import names
from tests.cluster.world import World
from tests.processes import WAIT_TIMEOUT, wait_for

pytestmark = pytest.mark.system

STEPS = [f"step-{i}" for i in range(4)]


def steps_of(inv: Invocation) -> list[tuple[int, str, str, str, int]]:
    return [(s.index, s.kind, s.name, s.status, s.attempts) for s in inv.steps]


# -- SIGKILL mid-step, then replay -----------------------------------------------------


def test_a_worker_killed_mid_step_is_replayed_from_the_cluster_journal(world: World) -> None:
    task_id = world.new_id()
    world.block(task_id, "step-2")
    first = world.start_worker()
    world.send(names.PIPELINE, "order-1", len(STEPS), task_id=task_id)

    assert world.wait_entered(task_id, "step-2") == first.pid
    before = world.invocation(task_id)
    assert before.status == "running"
    assert steps_of(before) == [(0, "run", "step-0", "completed", 1),
                                (1, "run", "step-1", "completed", 1)]  # fmt: skip
    first.kill()
    assert first.process.returncode == -signal.SIGKILL
    assert world.unacked() == 1, "the killed worker's message waits for redelivery"

    second = world.start_worker()
    result = world.result(task_id).get(timeout=WAIT_TIMEOUT)

    # Steps before the kill ran once; the interrupted one again; the last one once.
    assert world.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 1}
    assert len(world.bodies(task_id)) == 2
    assert [s["pid"] for s in result["steps"]] == [first.pid, first.pid, second.pid, second.pid]
    assert result["steps"][:2] == [s.value for s in before.steps]

    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    # The worker's death counts as the first attempt of step-2.
    assert steps_of(inv) == [
        (i, "run", name, "completed", 2 if name == "step-2" else 1) for i, name in enumerate(STEPS)
    ]
    assert [s.value for s in inv.steps] == result["steps"]
    world.wait_settled()


# -- A step that fails once, retried by its RetryPolicy ------------------------------


def test_a_step_that_fails_once_is_retried_and_earlier_steps_replay(world: World) -> None:
    task_id = world.new_id()
    world.start_worker()
    result = world.send(names.FLAKY, "order-r", 0.5, task_id=task_id).get(timeout=WAIT_TIMEOUT)

    assert world.runs(task_id, "prep-0", "prep-1", "flaky") == {
        "prep-0": 1, "prep-1": 1, "flaky": 2,
    }  # fmt: skip
    assert len(world.bodies(task_id)) == 2, "one execution per attempt of the flaky step"
    retried, done = world.wait_outcomes(task_id, 2)
    assert (retried["state"], retried["type"]) == ("RETRY", "Retry")
    assert (done["state"], done["retries"], done["value"]) == ("SUCCESS", 1, result)
    assert result["steps"][2]["run"] == 2

    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert steps_of(inv) == [
        (0, "run", "prep-0", "completed", 1),
        (1, "run", "prep-1", "completed", 1),
        (2, "run", "flaky", "completed", 2),
    ]
    assert [s.value for s in inv.steps] == result["steps"]
    world.wait_settled()


# -- Overlapping deliveries: the visibility timeout runs out during a long step -------


def test_an_overlapping_delivery_defers_and_every_step_runs_once(world: World) -> None:
    task_id = world.new_id()
    workers = world.start_workers(2, visibility_timeout=2)
    async_result = world.send(names.OVERLAP, "order-o", 6.0, task_id=task_id)
    holder = world.wait_entered(task_id, "long")
    [other] = [w.pid for w in workers if w.pid != holder]

    result = async_result.get(timeout=WAIT_TIMEOUT)

    def quiet() -> list[dict[str, Any]] | None:
        # The holder's success, and the other worker's chain of deferrals ended by a
        # delivery that found the invocation done.
        found = world.outcomes(task_id)
        finals = [o for o in found if o["state"] != "RETRY"]
        settled = world.queued() == 0 and world.unacked() == 0
        return found if len(finals) >= 2 and settled else None

    outcomes = wait_for(quiet, "the deliveries to settle", WAIT_TIMEOUT)
    deferrals = [o for o in outcomes if o["state"] == "RETRY"]
    assert deferrals, f"no delivery overlapped the long step: {outcomes}"
    assert {o["pid"] for o in deferrals} == {other}
    assert all("deferred" in o["message"] for o in deferrals)
    assert all(o["value"] == result for o in outcomes if o["state"] == "SUCCESS")

    assert world.runs(task_id, "first", "long", "last") == {"first": 1, "long": 1, "last": 1}
    assert len(world.bodies(task_id)) == 1
    assert world.counter(world.rec.max_active(task_id)) == 1
    assert [s["pid"] for s in result["steps"]] == [holder] * 3

    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert steps_of(inv) == [(0, "run", "first", "completed", 1),
                             (1, "run", "long", "completed", 1),
                             (2, "run", "last", "completed", 1)]  # fmt: skip
    assert inv.steps[1].value == result["steps"][1]


# -- A sleep, woken by the wake-up component -------------------------------------------


def test_sleeps_on_every_master_are_woken_by_the_wakeup_component(world: World) -> None:
    masters = [n.port for n in world.cluster.nodes() if n.role == "master"]
    task_ids = [world.new_id(port) for port in masters]  # one invocation per master
    worker = world.start_worker()
    results = [world.send(names.NAP, 1.0, task_id=task_id) for task_id in task_ids]
    assert [r.get(timeout=WAIT_TIMEOUT) for r in results] == ["rested"] * len(task_ids)

    for task_id in task_ids:
        assert world.runs(task_id, "before", "after") == {"before": 1, "after": 1}
        bodies = world.bodies(task_id)
        assert len(bodies) == 2, "suspended once, woken once"
        # The first delivery suspended the invocation and ended (no worker slot held
        # for the sleep); the wake-up component published it again.
        suspended, woken = world.wait_outcomes(task_id, 2)
        assert (suspended["state"], woken["state"]) == ("IGNORED", "SUCCESS")
        assert f"woke invocation {task_id}" in worker.log()
        inv = world.invocation(task_id)
        assert inv.status == "completed"
        assert [(s.kind, s.name, s.status) for s in inv.steps] == [
            ("run", "before", "completed"),
            ("sleep", "nap", "completed"),
            ("run", "after", "completed"),
        ]
        due = float(inv.steps[1].value["until"]) / 1000
        assert bodies[0] < due <= bodies[1], "woken no earlier than the timer was due"
        # Nothing left to wake: neither in its slot's set nor in the one workers claim.
        client = world.store_client()
        assert client.zscore(world.keys.wakeups_of(task_id), task_id) is None
        assert client.zscore(world.keys.wakeups, task_id) is None
    world.wait_settled()


# -- Listing and the CLI across masters --------------------------------------------------


def test_listing_and_the_cli_see_invocations_on_every_master(world: World) -> None:
    masters = [n.port for n in world.cluster.nodes() if n.role == "master"]
    completed = [world.new_id(port) for port in masters for _ in range(2)]
    running = world.new_id(masters[0])
    world.start_worker()
    for task_id in completed:
        world.send(names.PIPELINE, "order-l", 2, task_id=task_id).get(timeout=WAIT_TIMEOUT)
    world.block(running, "step-1")
    world.send(names.PIPELINE, "order-l", 2, task_id=running)
    world.wait_entered(running, "step-1")
    slots = {world.keys.slot(task_id) for task_id in [*completed, running]}
    assert len({world.cluster.master_of_slot(slot).port for slot in slots}) == 3

    listed = celery_durable.list_invocations(world.app, status="completed")
    assert sorted(inv.id for inv in listed) == sorted(completed)
    assert all(inv.status == "completed" and len(inv.steps) == 2 for inv in listed)
    created = [inv.created_at for inv in listed]
    assert created == sorted(created, reverse=True), "newest first"
    [live] = celery_durable.list_invocations(world.app, status="running")
    assert (live.id, [s.name for s in live.steps]) == (running, ["step-0"])
    everything = celery_durable.list_invocations(world.app)
    assert sorted(inv.id for inv in everything) == sorted([*completed, running])

    shown = world.celery("durable", "ls", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert sorted(row["id"] for row in rows) == sorted([*completed, running])
    assert {row["id"]: row["status"] for row in rows} == {
        **dict.fromkeys(completed, "completed"), running: "running",
    }  # fmt: skip
    only_running = world.celery("durable", "ls", "--status", "running", "--json")
    assert only_running.returncode == 0, only_running.stderr
    assert [row["id"] for row in json.loads(only_running.stdout)] == [running]

    world.release(running, "step-1")
    world.result(running).get(timeout=WAIT_TIMEOUT)
    assert world.runs(running, "step-0", "step-1") == {"step-0": 1, "step-1": 1}
    assert celery_durable.list_invocations(world.app, status="running") == []
    assert len(celery_durable.list_invocations(world.app, status="completed")) == 7


# -- Flow control: a key's line in another slot than its invocations; cancel; deadline --


def test_flow_control_on_the_cluster_journal(world: World) -> None:
    world.start_worker()
    keyed = [world.send(names.KEYED, "acct", 0.2) for _ in range(3)]
    napping = world.send(names.NAP, 3600.0)
    late = world.send(names.DEADLINED, 3600.0)

    assert [r.get(timeout=WAIT_TIMEOUT) for r in keyed] == ["acct"] * 3
    spans = sorted(json.loads(s)[1:] for s in world.client.lrange(world.rec.spans("acct"), 0, -1))
    assert len(spans) == 3
    assert all(start >= end for (_, end), (start, _) in itertools.pairwise(spans))
    assert celery_durable.concurrency_slots(world.app, "acct").holders == []

    world.wait_status(napping.id, "suspended")
    celery_durable.cancel_invocation(world.app, napping.id, reason="stop")
    assert world.wait_status(napping.id, "cancelled").cancel_reason == "stop"
    ended = world.wait_status(late.id, "cancelled")  # its deadline, 1.5 s after it began
    assert "its deadline passed" in (ended.cancel_reason or "")
