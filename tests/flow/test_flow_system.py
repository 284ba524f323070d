"""Flow control with real worker subprocesses: cancels that reach children, ``--kill``,
deadlines, and concurrency keys under load and across SIGKILLs.

Each test checks what ran (counted by the workers in Redis, outside the journal) and
what the journal holds.
"""

from __future__ import annotations

import json
import time
from itertools import pairwise

import pytest

from celery_durable import InvocationCancelled, concurrency_slots
from tests.flow import names
from tests.flow.world import World
from tests.processes import wait_for

pytestmark = pytest.mark.system

TIMEOUT = 30


def steps_of(world: World, task_id: str) -> list[tuple[str, str, str]]:
    return [(s.kind, s.name, s.status) for s in world.invocation(task_id).steps]


def held_intervals(
    spans: list[tuple[str, str, float, float]],
) -> list[tuple[float, float, str]]:
    """Per invocation, from the start of its first step to the end of its last: while it
    held its key's slot at least. Sorted by start."""
    found: dict[str, tuple[float, float]] = {}
    for task_id, _, start, end in spans:
        low, high = found.get(task_id, (start, end))
        found[task_id] = (min(low, start), max(high, end))
    return sorted((low, high, task_id) for task_id, (low, high) in found.items())


# -- Cancel -------------------------------------------------------------------------------------


def test_a_saga_cancelled_while_it_sleeps_compensates_once_and_its_child_too(
    world: World,
) -> None:
    world.start_worker()
    result = world.send(names.SAGA, "o-1")
    child = f"{result.id}/1"  # started at journal index 1, after "reserve"
    world.wait_status(child, "suspended")
    world.wait_status(result.id, "suspended")

    began = time.monotonic()
    done = world.cli("cancel", result.id, "--reason", "the customer left", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": result.id, "previous_status": "suspended", "killed": False, "already": False,
        "children": [child],
    }  # fmt: skip
    with pytest.raises(InvocationCancelled, match="the customer left"):
        result.get(timeout=TIMEOUT)
    took = time.monotonic() - began
    world.wait_status(child, "cancelled")

    assert took < 10, f"a day's sleep took {took:.1f} s to cancel"
    assert world.runs(result.id, "reserve", "refund") == {"reserve": 1, "refund": 1}
    assert world.runs(child, "book", "unbook") == {"book": 1, "unbook": 1}
    # The child's cancellation comes back to the parent's call, if the parent still runs.
    calls = {"waiting", "failed"}
    [reserve, ship, day, cancel, refund] = steps_of(world, result.id)
    assert (reserve, day, cancel, refund) == (
        ("run", "reserve", "completed"),
        ("sleep", "a day", "waiting"),
        ("cancel", "cancel", "cancelled"),
        ("run", "refund", "completed"),
    )
    assert ship[:2] == ("call", "ship") and ship[2] in calls
    inv = world.invocation(result.id)
    assert (inv.status, inv.cancel_reason) == ("cancelled", "the customer left")
    assert inv.error is not None and inv.error["type"] == "InvocationCancelled"
    shipped = world.invocation(child)
    assert shipped.cancel_reason == f"its parent {result.id} was cancelled: the customer left"
    assert [s.kind for s in shipped.steps] == ["run", "sleep", "cancel", "run"]


def test_kill_runs_nothing_more_of_the_saga_nor_of_its_child(world: World) -> None:
    world.start_worker()
    result = world.send(names.SAGA, "o-2")
    child = f"{result.id}/1"
    world.wait_status(child, "suspended")
    world.wait_status(result.id, "suspended")

    done = world.cli("cancel", result.id, "--kill", "--reason", "fraud", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["killed"] is True
    assert json.loads(done.stdout)["children"] == [child]
    with pytest.raises(InvocationCancelled, match="fraud"):
        result.get(timeout=TIMEOUT)
    assert world.invocation(result.id).status == "cancelled"
    assert world.invocation(child).status == "cancelled"
    time.sleep(2)  # a wake-up or a redelivery would have run a body by now
    assert world.runs(result.id, "reserve", "refund") == {"reserve": 1, "refund": 0}
    assert world.runs(child, "book", "unbook") == {"book": 1, "unbook": 0}
    assert [s.kind for s in world.invocation(result.id).steps] == ["run", "call", "sleep"]
    # A cancel of what has finished says so, and changes nothing.
    again = world.cli("cancel", result.id)
    assert again.returncode == 1
    assert "it has finished" in again.stderr


def test_a_deadline_cancels_a_suspended_invocation(world: World) -> None:
    world.start_worker()
    result = world.send(names.NAP)  # durable_timeout=2.0
    inv = world.wait_status(result.id, "suspended")
    assert inv.deadline is not None and inv.created_at is not None
    assert inv.deadline.timestamp() - inv.created_at.timestamp() == pytest.approx(2.0, abs=0.1)
    with pytest.raises(InvocationCancelled, match="its deadline passed"):
        result.get(timeout=TIMEOUT)
    ended = world.invocation(result.id)
    assert ended.status == "cancelled"
    assert ended.updated_at is not None
    late = ended.updated_at.timestamp() - inv.deadline.timestamp()
    assert 0 <= late < 5, f"cancelled {late:.2f} s after its deadline"
    assert world.runs(result.id, "before", "cleanup") == {"before": 1, "cleanup": 1}
    assert [s.kind for s in ended.steps] == ["run", "sleep", "cancel", "run"]


# -- Concurrency keys -----------------------------------------------------------------------------


def test_eight_invocations_over_two_keys_run_one_per_key_side_by_side(world: World) -> None:
    world.start_worker(pool="prefork", concurrency=4)
    results = [world.send(names.TRANSFER, account, 0.3) for _ in range(4) for account in "AB"]
    assert sorted(r.get(timeout=60) for r in results) == ["A"] * 4 + ["B"] * 4

    for result in results:
        assert world.runs(result.id, "debit", "credit") == {"debit": 1, "credit": 1}
        assert world.invocation(result.id).status == "completed"
    held = {key: held_intervals(world.spans(key)) for key in "AB"}
    for key, intervals in held.items():
        assert len(intervals) == 4
        for (_, end, first), (start, _, second) in pairwise(intervals):
            assert start >= end, f"{first} and {second} of key {key} ran at once"
    # The two keys ran side by side: some invocation of A overlapped one of B.
    assert any(a0 < b1 and b0 < a1 for a0, a1, _ in held["A"] for b0, b1, _ in held["B"])
    for key in "AB":
        slots = concurrency_slots(world.app, key)
        assert (slots.holders, slots.waiting) == ([], [])


def test_a_worker_killed_holding_a_slot_blocks_its_key_no_longer_than_its_lease(
    world: World,
) -> None:
    doomed = world.start_worker()
    holder_id = world.new_id()
    world.block(holder_id)
    holder = world.send(names.HOLD, "acct", 0.0, task_id=holder_id)
    world.wait_entered(holder.id, "work")
    world.start_worker()
    waiter = world.send(names.HOLD, "acct", 0.0)
    world.wait_status(waiter.id, "suspended")
    assert concurrency_slots(world.app, "acct").holders == [holder.id]

    doomed.kill()
    killed_at = time.time()
    assert waiter.get(timeout=TIMEOUT) == "acct"
    [(_, _, started, _)] = [s for s in world.spans("acct") if s[0] == waiter.id]
    # The holder's lease ran out at most LEASE_TTL after the kill; the waiter looked again
    # then, found it dead, and took its turn.
    assert started - killed_at < names.LEASE_TTL + 3
    # The holder's message came back after the visibility timeout. Whichever of the two
    # looked first once the lease ran out went first (the holder still owns its slot if its
    # redelivery got there before the waiter looked), and the two never overlapped.
    assert holder.get(timeout=TIMEOUT) == "acct"
    intervals = held_intervals(world.spans("acct"))
    assert sorted(task_id for _, _, task_id in intervals) == sorted([waiter.id, holder.id])
    assert intervals[1][0] >= intervals[0][1]


@pytest.mark.parametrize("die_at", ["give-back", "grant"])
def test_a_worker_that_dies_between_the_key_and_the_invocation_blocks_nobody(
    world: World, die_at: str
) -> None:
    # The key's sets and the invocations are two hash slots on a Redis Cluster: the
    # holder's worker dies after its finish but before it gave the slot back, or after it
    # handed the slot to the waiter but before it told the waiter.
    holders_queue = f"{world.queue}-holders"
    world.start_worker(queues=(holders_queue,), **{names.ENV_DIE_AT: die_at})
    world.start_worker()
    holder = world.send(names.HOLD, "acct", 1.5, queue=holders_queue)
    wait_for(lambda: world.runs(holder.id, "work")["work"], "the holder to work")
    waiter = world.send(names.HOLD, "acct", 0.0)
    world.wait_status(waiter.id, "suspended")

    assert waiter.get(timeout=TIMEOUT) == "acct"
    [died] = world.died()
    assert (died["where"], died["task_id"]) == (
        die_at, holder.id if die_at == "give-back" else waiter.id
    )  # fmt: skip
    assert world.invocation(holder.id).status == "completed"
    intervals = held_intervals(world.spans("acct"))
    assert [task_id for _, _, task_id in intervals] == [holder.id, waiter.id]
    assert intervals[1][0] >= intervals[0][1]
    slots = concurrency_slots(world.app, "acct")
    assert (slots.holders, slots.waiting) == ([], [])
