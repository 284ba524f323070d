"""Awaitables with real worker subprocesses: races, combinators, sleeps, children, kills.

The ideas of Restate's combinator and sleep tests, on Celery workers that are
``celery worker`` subprocesses (solo pool: one process each), SIGKILLed where a test
says. Each test checks what ran (counted in Redis by the workers, outside the journal)
and what the journal holds (``get_invocation``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from celery_durable import Invocation, reject_awakeable, resolve_awakeable
from tests.awaitables import names
from tests.awaitables.world import World
from tests.processes import wait_for

pytestmark = pytest.mark.system

#: Run a test once on the Redis broker and once on RabbitMQ (Redis keeps the journal).
BOTH_BROKERS = pytest.mark.parametrize("world", [names.REDIS, names.AMQP], indirect=True)
TIMEOUT = 30


def steps_of(inv: Invocation) -> list[tuple[str, str, str]]:
    return [(s.kind, s.name, s.status) for s in inv.steps]


def until_of(inv: Invocation, name: str) -> float:
    """When the timer ``name`` is due, as journaled (epoch seconds)."""
    [timer] = [s for s in inv.steps if s.kind == "sleep" and s.name == name]
    return float(timer.value["until"]) / 1000


# -- 1. A race between an awakeable and a timer ---------------------------------------------


@BOTH_BROKERS
def test_a_timer_that_wins_a_race_keeps_its_branch_when_the_awakeable_comes_later(
    world: World,
) -> None:
    world.start_worker()
    result = world.send(names.RACE, 0.5, 2.0)
    task_id = result.id
    awakeable_id = world.awakeable_id(task_id, "approval")

    # The timer's branch ran; the body now sleeps ("linger").
    world.wait_suspended_on(task_id, "linger")
    assert world.branches(task_id) == [1]

    # Completing the losing awakeable is accepted (first completion wins), and it wakes
    # the sleeping invocation early: a replay, which must take the timer's branch again.
    assert resolve_awakeable(world.app, awakeable_id, "late") is True
    assert resolve_awakeable(world.app, awakeable_id, "later") is False
    assert result.get(timeout=TIMEOUT) == {"winner": 1}

    # Executions: the first (suspends on the race), the timer's wake-up (branch, then
    # suspends on linger), the awakeable's wake-up (replays, suspends again), linger's.
    assert world.branches(task_id) == [1, 1, 1]
    assert len(world.bodies(task_id)) == 4
    assert world.runs(task_id, "ask", "branch-0", "branch-1") == {
        "ask": 1,
        "branch-0": 0,
        "branch-1": 1,
    }
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.awaiting == []
    assert steps_of(inv) == [
        ("awakeable", "approval", "completed"),
        ("run", "ask", "completed"),
        ("sleep", "deadline", "completed"),
        ("any", "any", "completed"),
        ("run", "branch-1", "completed"),
        ("sleep", "linger", "completed"),
    ]
    [race] = [s for s in inv.steps if s.kind == "any"]
    assert race.value == {"c": 0, "w": 1}  # recorded once: the timer, position 1
    # The awakeable holds the late value; the branch was decided before it came.
    assert "late" in str(inv.steps[0].value)
    assert inv.steps[0].finished_at is not None
    assert inv.steps[0].finished_at.timestamp() > until_of(inv, "deadline")


# -- 2. First successful of three awakeables --------------------------------------------------


def test_the_first_successful_of_three_awakeables_skips_a_rejected_one(world: World) -> None:
    world.start_worker()
    result = world.send(names.FIRST_OK, 3)
    task_id = result.id
    ids = [world.awakeable_id(task_id, f"offer-{i}") for i in range(3)]
    world.wait_suspended_on(task_id, "offer-0", "offer-1", "offer-2")

    # Offer 0 is refused first, then offer 2 accepted; offer 1 never answers.
    assert reject_awakeable(world.app, ids[0], "no stock") is True
    assert resolve_awakeable(world.app, ids[2], {"price": 7}) is True
    assert result.get(timeout=TIMEOUT) == {
        "winner": 2,
        "value": {"price": 7},
        "failures": [[0, "no stock"]],
    }
    assert resolve_awakeable(world.app, ids[1], {"price": 1}) is False  # finished

    # Every execution saw the same winners: the rejected one, then the resolved one (an
    # execution that ran before the resolution came suspended on the second race).
    branches = world.branches(task_id)
    assert branches[0] == 0
    assert branches[-1] == 2
    assert branches.count(2) == 1
    assert set(branches) == {0, 2}
    assert world.runs(task_id, "ask-0", "ask-1", "ask-2") == {"ask-0": 1, "ask-1": 1, "ask-2": 1}
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert [(s.kind, s.name, s.status) for s in inv.steps if s.kind != "run"] == [
        ("awakeable", "offer-0", "failed"),
        ("awakeable", "offer-1", "waiting"),
        ("awakeable", "offer-2", "completed"),
        ("any", "race-0", "completed"),
        ("any", "race-1", "completed"),
    ]
    races = [s.value for s in inv.steps if s.kind == "any"]
    # race-1 is over offers 1 and 2: position 1 is offer 2.
    assert races == [{"c": 0, "w": 0}, {"c": 1, "w": 1}]


# -- 3. all over children, an awakeable and a timer ------------------------------------------


@BOTH_BROKERS
def test_all_gives_values_in_argument_order_and_settle_keeps_failures_in_place(
    world: World,
) -> None:
    world.start_worker()
    ok = world.send(names.GATHER, False, False)
    settled = world.send(names.GATHER, True, True)
    awakeables = {r.id: world.awakeable_id(r.id, "approval") for r in (ok, settled)}

    # Complete the awakeables last: after the children (positions 0, 1) and the timer
    # (position 3), so that completion order is not argument order.
    def children_done(task_id: str) -> bool:
        inv = world.invocation(task_id)
        return all(s.status != "waiting" for s in inv.steps if s.kind in ("call", "sleep"))

    for result in (ok, settled):
        wait_for(lambda r=result: children_done(r.id), f"the children of {result.id}")
    assert resolve_awakeable(world.app, awakeables[ok.id], {"by": "ada"}) is True
    assert reject_awakeable(world.app, awakeables[settled.id], "declined") is True

    assert ok.get(timeout=TIMEOUT) == [42, 25, {"by": "ada"}, None]
    first, square, approval, timer = settled.get(timeout=TIMEOUT)
    assert first["terminal"] is True  # a TerminalError that is also the child's KeyError
    assert first["key_error"] is True
    assert first["error_type"] == "KeyError"
    assert "sku-9" in first["message"]
    assert square == 25
    assert approval == {
        "terminal": True,
        "key_error": False,
        "error_type": "TerminalError",
        "message": "declined",
    }
    assert timer is None

    for result, first_child, first_status in (
        (ok, "double", "completed"),
        (settled, "refuse", "failed"),
    ):
        task_id = result.id
        assert world.runs(task_id, first_child, "square", "ask") == {
            first_child: 1,
            "square": 1,
            "ask": 1,
        }
        inv = world.invocation(task_id)
        assert inv.status == "completed"
        assert steps_of(inv) == [
            ("awakeable", "approval", "failed" if result is settled else "completed"),
            ("run", "ask", "completed"),
            ("call", "first", first_status),
            ("call", "square", "completed"),
            ("sleep", "pause", "completed"),
            ("all", "all", "completed"),
        ]
        assert inv.steps[5].value == {"c": 0, "f": None}
        # Each child was started once, under the id derived from the journal position.
        assert world.receipts(f"{task_id}/2") == 1
        assert world.receipts(f"{task_id}/3") == 1
        child = world.invocation(f"{task_id}/3")  # the DurableTask child has a journal
        assert child.status == "completed"
        assert child.result == 25
    refused = world.invocation(settled.id).steps[2]
    assert refused.error is not None
    assert refused.error["type"] == "KeyError"


# -- 4. Suspended invocations hold no worker slot ---------------------------------------------


def test_two_sleeping_parents_share_one_worker_process(world: World, record_property: Any) -> None:
    world.start_worker()  # solo pool: one task at a time
    started = time.monotonic()
    naps = [world.send(names.NAP, 3.0) for _ in range(2)]
    # Both are suspended at once: the first one's sleep does not hold the process.
    for result in naps:
        world.wait_suspended_on(result.id, "nap")
    assert [r.get(timeout=TIMEOUT) for r in naps] == ["rested", "rested"]
    took = time.monotonic() - started
    assert took < 4.5, f"two 3 s sleeps on one process took {took:.2f} s"

    latencies = []
    for result in naps:
        assert world.runs(result.id, "before", "after") == {"before": 1, "after": 1}
        bodies = world.bodies(result.id)
        assert len(bodies) == 2
        inv = world.invocation(result.id)
        assert steps_of(inv) == [
            ("run", "before", "completed"),
            ("sleep", "nap", "completed"),
            ("run", "after", "completed"),
        ]
        latencies.append(bodies[1] - until_of(inv, "nap"))
    assert all(latency >= 0 for latency in latencies)  # never woken early
    record_property("wake_latencies", [round(x, 3) for x in latencies])
    print(f"\ntwo 3 s naps took {took:.2f} s; due -> body again: {latencies}")


# -- 5. A sleep survives SIGKILLs ------------------------------------------------------------

#: The claim visibility of the worker that dies after claiming. The library's default,
#: ``wakeups.CLAIM_VISIBILITY``, is 30 s: too long for a test, and not a setting.
DYING_CLAIM_VISIBILITY = 2.0


@BOTH_BROKERS
def test_a_sleep_survives_the_kill_of_its_worker_and_of_the_worker_that_claimed_it(
    world: World,
) -> None:
    first = world.start_worker()
    result = world.send(names.NAP, 3.0)
    task_id = result.id
    inv = world.wait_suspended_on(task_id, "nap")
    due = until_of(inv, "nap")
    # Killed during the sleep, once the suspended execution's message is acked: else it
    # comes back (at once on RabbitMQ, after the visibility timeout on Redis), maybe
    # after the sleep is due, and the invocation goes on from it, not from the wake-up.
    wait_for(lambda: f"aw.nap[{task_id}] ignored" in first.log(), "the suspension to end")
    if world.broker == names.REDIS:
        wait_for(lambda: world.unacked() == 0, "the suspended execution's message to be acked")
    else:
        time.sleep(0.3)  # RabbitMQ does not tell who holds what: leave time for the ack
    first.kill()

    # A worker that claims the due wake-up, then dies before publishing it.
    claimer = world.start_worker(
        wait=False,
        **{
            names.ENV_DIE_BEFORE_PUBLISH: "1",
            names.ENV_CLAIM_VISIBILITY: str(DYING_CLAIM_VISIBILITY),
        },
    )
    wait_for(lambda: not claimer.alive(), "the claiming worker to kill itself")
    claimer.kill()
    [dead] = world.dead_claimers()
    assert dead["task_id"] == task_id
    claimed_until = world.wakeup_score(task_id)
    assert claimed_until is not None, "the claimed wake-up must still be kept"
    assert claimed_until / 1000 >= due + DYING_CLAIM_VISIBILITY - 0.05
    assert world.invocation(task_id).status == "suspended"
    assert len(world.bodies(task_id)) == 1
    assert all(t < due for t in world.bodies(task_id))

    world.start_worker()
    assert result.get(timeout=TIMEOUT) == "rested"
    bodies = world.bodies(task_id)
    assert len(bodies) == 2
    assert bodies[-1] >= claimed_until / 1000 - 0.05  # published once the claim ran out
    assert world.runs(task_id, "before", "after") == {"before": 1, "after": 1}
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert steps_of(inv) == [
        ("run", "before", "completed"),
        ("sleep", "nap", "completed"),
        ("run", "after", "completed"),
    ]
    assert world.wakeup_score(task_id) is None  # acknowledged


# -- 6. A parent killed right after starting its child ---------------------------------------


@pytest.mark.split
@BOTH_BROKERS
@pytest.mark.parametrize(
    ("where", "child"),
    [
        # Killed between the broker taking the child and the parent's "sent" marker:
        # the replay publishes the child again; a DurableTask child runs once anyway.
        ("publish", names.DURABLE_CHILD),
        # Killed in the step after the call: the marker is there, nothing is sent again,
        # so even a plain child runs once.
        ("hold", names.PLAIN_CHILD),
    ],
)
def test_a_parent_killed_after_starting_its_child_starts_it_once_and_is_woken_by_it(
    world: World, where: str, child: str
) -> None:
    parents = world.start_worker(queues=(world.queue,))
    # A parent that is suspended on its child when the parents' worker dies.
    waiting = world.send(names.PARENT, child, False)
    world.wait_suspended_on(waiting.id, "child")
    # A parent whose worker is killed right after starting its child.
    killed_id = world.new_id()
    if where == "publish":
        world.hold_publish(f"{killed_id}/1")
    else:
        world.block(killed_id, "hold")
    killed = world.send(names.PARENT, child, where == "hold", task_id=killed_id)
    world.wait_entered(f"{killed_id}/1" if where == "publish" else killed_id, where)
    parents.kill()

    if where == "publish":
        # The replay sends the child again (no marker), and suspends on it; then the
        # parents' worker dies too, so that the children finish with none running.
        again = world.start_worker(queues=(world.queue,))
        world.wait_suspended_on(killed_id, "child")
        again.kill()

    # The children's worker: both children finish while no worker serves the parents.
    children = world.start_worker(queues=(world.children,))
    for task_id in (waiting.id, killed_id):
        wait_for(
            lambda t=task_id: world.invocation(t).steps[1].status == "completed",
            f"the child of {task_id} to complete",
        )
    # A suspended parent is woken by its child's outcome (with "hold", the killed parent
    # is still "running" for the journal: its message comes back from the broker).
    woken = [waiting.id] if where == "hold" else [waiting.id, killed_id]
    for task_id in woken:
        wait_for(lambda t=task_id: f"woke invocation {t}" in children.log(), f"{task_id} woken")
    # The wake-up waits in the parents' queue, with no worker to take it.
    assert world.queued(world.queue) >= 1
    assert world.invocation(waiting.id).status == "suspended"

    world.start_worker(queues=(world.queue,))
    for result in (waiting, killed):
        value = result.get(timeout=TIMEOUT)
        assert value["child"]["run"] == 1

    assert world.runs(waiting.id, "prep", "child", "after") == {"prep": 1, "child": 1, "after": 1}
    assert world.receipts(f"{waiting.id}/1") == 1
    killed_runs = world.runs(killed_id, "prep", "child", "hold", "after")
    assert killed_runs == {
        "prep": 1,
        "child": 1,  # the child's side effect, once
        "hold": 2 if where == "hold" else 0,  # the step the kill interrupted runs again
        "after": 1,
    }
    assert world.receipts(f"{killed_id}/1") == (2 if where == "publish" else 1)
    inv = world.invocation(killed_id)
    assert inv.status == "completed"
    assert steps_of(inv) == [
        ("run", "prep", "completed"),
        ("call", "child", "completed"),
        *([("run", "hold", "completed")] if where == "hold" else []),
        ("run", "after", "completed"),
    ]
    if child == names.DURABLE_CHILD:
        child_inv = world.invocation(f"{killed_id}/1")
        assert child_inv.status == "completed"
        assert [(s.name, s.status) for s in child_inv.steps] == [("child", "completed")]


# -- 7. run_async ---------------------------------------------------------------------------


def test_run_async_steps_run_concurrently_and_replay_without_running(world: World) -> None:
    world.start_worker()
    result = world.send(names.FAN_OUT, 4, 0.3)
    task_id = result.id
    assert result.get(timeout=TIMEOUT) == ["part-0", "part-1", "part-2", "part-3"]

    parts = [f"part-{i}" for i in range(4)]
    assert world.runs(task_id, *parts) == dict.fromkeys(parts, 1)
    spans = [span for part in parts for span in world.spans(task_id, part)]
    took = max(end for _, end in spans) - min(start for start, _ in spans)
    assert took < 0.9, f"four 0.3 s steps took {took:.2f} s: not concurrent"
    assert len(world.bodies(task_id)) == 2  # the sleep's wake-up replayed all four
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert steps_of(inv) == [
        *[("run", part, "completed") for part in parts],
        ("all", "all", "completed"),
        ("sleep", "then", "completed"),
    ]
    assert [s.value["name"] for s in inv.steps[:4]] == parts


# -- Wake-up latency -------------------------------------------------------------------------


def test_wake_up_latency(world: World, record_property: Any) -> None:
    """From a timer being due to the body running again: below the bootstep's poll
    (0.25 s) plus a publish and a delivery. Printed; asserted only loosely."""
    world.start_worker()
    naps = [world.send(names.NAP, 1.0 + 0.2 * i) for i in range(6)]
    latencies = []
    for result in naps:
        assert result.get(timeout=TIMEOUT) == "rested"
        bodies = world.bodies(result.id)
        latencies.append(bodies[1] - until_of(world.invocation(result.id), "nap"))
    median = statistics.median(latencies)
    record_property("wake_latency_median", round(median, 3))
    print(f"\ndue -> body running again: median {median:.3f} s, all {latencies}")
    assert all(latency >= 0 for latency in latencies)
    assert median < 1.0


# -- A child that suspends itself -----------------------------------------------------------


def test_a_child_that_sleeps_wakes_its_parent_once_it_is_done(world: World) -> None:
    world.start_worker()
    result = world.send(names.PARENT, names.NAPPING_CHILD, False)
    task_id = result.id
    assert result.get(timeout=TIMEOUT)["child"]["run"] == 1
    assert world.runs(task_id, "prep", "child-before", "child", "after") == {
        "prep": 1,
        "child-before": 1,
        "child": 1,
        "after": 1,
    }
    # The child's wake-up re-published it with its link to the parent.
    assert world.receipts(f"{task_id}/1") == 2
    child = world.invocation(f"{task_id}/1")
    assert child.status == "completed"
    assert steps_of(child) == [
        ("run", "child-before", "completed"),
        ("sleep", "child-nap", "completed"),
        ("run", "child", "completed"),
    ]
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert steps_of(inv) == [
        ("run", "prep", "completed"),
        ("call", "child", "completed"),
        ("run", "after", "completed"),
    ]


# -- A sleep longer than the message's expiry (BUG) ----------------------------------------


@BOTH_BROKERS
def test_a_sleep_longer_than_the_messages_expiry_still_completes(world: World) -> None:
    """``expires`` bounds when an invocation may start. This one started at once; its
    wake-up must not inherit the first message's expiry.

    Fails today: the wake-up re-publishes the stored call with the original
    ``expires`` (``wakeups._OPTIONS``). On Redis the woken message is discarded as
    expired and the invocation is journaled ``cancelled`` after its first step ran.
    On RabbitMQ the wake-up is published with a TTL of 0: when no consumer can take it
    at once (the only worker is busy), RabbitMQ drops it, the wake-up is already
    acknowledged, and the invocation stays ``suspended`` for ever, with nothing left
    to wake it.
    """
    world.start_worker()
    result = world.send(names.NAP, 2.0, expires=1.0)
    task_id = result.id
    world.wait_suspended_on(task_id, "nap")
    # The only worker is busy when the sleep is due (one 4 s step).
    busy = world.send(names.FAN_OUT, 1, 4.0)
    assert busy.get(timeout=TIMEOUT) == ["part-0"]
    try:
        value: Any = result.get(timeout=5)
    except Exception as exc:
        value = exc
    inv = world.invocation(task_id)
    described = (
        f"result {value!r}, journal {inv.status}, error {inv.error}, awaiting {inv.awaiting}, "
        f"wake-up kept: {world.wakeup_score(task_id)}, queued: {world.queued(world.queue)}"
    )
    assert value == "rested", described
    assert inv.status == "completed", described
    assert world.runs(task_id, "before", "after") == {"before": 1, "after": 1}
