"""Leases and fencing with real workers: overlapping deliveries, a lease taken over from
a stalled holder, deaths outside any step, revocations and hard time limits.

An execution holds a lease on its invocation, with a fencing token that every journal
write checks. Every test asserts what ran (counted by the task in Redis, outside the
journal) and what the journal holds afterwards, down to its meta hash and its TTLs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

import pytest
from billiard.exceptions import WorkerLostError

from celery_durable import Invocation, TerminalError
from tests.processes import WAIT_TIMEOUT, wait_for
from tests.system import harness
from tests.system.proj import DIE_MAX_RETRIES
from tests.system.workers import System, is_deferral

pytestmark = pytest.mark.system

OVERLAP_STEPS = ["first", "long", "last"]
PIPELINE_STEPS = [harness.step_name(i) for i in range(3)]


def holder_of(worker_pid: int) -> str:
    """The lease holder a process writes into the meta hash (``host:pid``)."""
    return f"{socket.gethostname()}:{worker_pid}"


def assert_finished_with_retention(system: System, task_id: str, steps: bool = True) -> None:
    """A finished invocation's meta hash and journal both expire (``durable_retention``,
    600 s here) and it holds no lease. A step-less invocation has no journal list."""
    meta_ttl, journal_ttl = system.pttls(task_id)
    assert 0 < meta_ttl <= 600_000, f"meta hash PTTL {meta_ttl}"
    if steps:
        assert 0 < journal_ttl <= 600_000, f"journal PTTL {journal_ttl}"
    else:
        assert journal_ttl == -2, f"a step-less invocation has a journal list: {journal_ttl}"
    meta = system.meta(task_id)
    assert "lease" not in meta and "lease_until" not in meta, f"a lease outlived it: {meta}"


def wait_status(system: System, task_id: str, status: str) -> Invocation:
    """Wait until the journal of ``task_id`` has ``status``; return the invocation."""

    def reached() -> Invocation | None:
        found = system.invocation(task_id)
        return found if found.status == status else None

    return wait_for(reached, f"the journal of {task_id} to be {status}")


def wait_quiet(system: System, task_id: str, chains: int) -> list[dict[str, Any]]:
    """Wait until every message of ``task_id`` a worker received has ended, ``chains``
    of them without a retry, and nothing waits in the queue; return the outcomes.

    A delivery that defers itself publishes its retry before it ends, so a chain of
    deferrals goes on until one of its messages ends otherwise.
    """

    def quiet() -> list[dict[str, Any]] | None:
        outcomes = system.outcomes(task_id)
        final = [o for o in outcomes if o["state"] != "RETRY"]
        if len(final) < chains or len(outcomes) != len(system.receipts(task_id)):
            return None
        if system.queued() or (system.broker == harness.REDIS and system.unacked()):
            return None
        return outcomes

    return wait_for(quiet, f"the deliveries of {task_id} to settle")


# -- 1. Overlapping deliveries --------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "cause", "at_most_once"),
    [
        pytest.param(harness.REDIS, "visibility", False, id="redis-visibility"),
        pytest.param(harness.REDIS, "visibility", True, id="redis-visibility-at_most_once"),
        pytest.param(harness.AMQP, "duplicate", False, id="amqp-duplicate"),
        pytest.param(harness.AMQP, "duplicate", True, id="amqp-duplicate-at_most_once"),
    ],
    indirect=["system"],
)
def test_an_overlapping_delivery_defers_and_runs_nothing_twice(
    system: System, cause: str, at_most_once: bool
) -> None:
    """A second delivery of a running invocation waits for its lease instead of running.

    ``visibility``: the Redis transport's visibility timeout (2 s) runs out during the
    6 s middle step, and the idle worker restores the unacked message and takes it.
    ``duplicate``: a client sends the same task id and arguments again during the step.
    """
    task_id = system.new_task_id()
    duration = 6.0 if cause == "visibility" else 3.0
    # Two idle workers: whichever takes the message, the other gets the second delivery.
    workers = [system.start_worker(visibility_timeout=2), system.start_worker(visibility_timeout=2)]
    async_result = system.send_named(
        harness.OVERLAP, task_id, "order-o", duration, at_most_once=at_most_once
    )
    holder_pid = system.wait_entered(task_id, "long")
    first_fence = system.meta(task_id)["fence"]
    [holder] = [w for w in workers if w.pid == holder_pid]
    [other] = [w for w in workers if w is not holder]
    if cause == "duplicate":
        system.send_named(harness.OVERLAP, task_id, "order-o", duration, at_most_once=at_most_once)

    result = async_result.get(timeout=WAIT_TIMEOUT)
    # The holder's success ends one chain; the second delivery's deferrals the other.
    outcomes = wait_quiet(system, task_id, chains=2)

    # The second delivery came during the long step and deferred itself, at least once.
    deferrals = [o for o in outcomes if is_deferral(o)]
    assert deferrals, f"no delivery overlapped the long step: {outcomes}"
    assert {o["pid"] for o in deferrals} == {other.pid}
    assert [o for o in outcomes if o["state"] == "RETRY"] == deferrals
    receipts = system.receipts(task_id)
    first_of_other = next(r for r in receipts if r["pid"] == other.pid)
    assert first_of_other["eta"] is None, "the second delivery was the restored or resent one"
    # Every delivery that did not defer returned the one result; the body ran once.
    finals = [o for o in outcomes if not is_deferral(o)]
    assert [o["state"] for o in finals] == ["SUCCESS"] * len(finals)
    assert all(o["value"] == result for o in finals)
    assert system.counter(system.rec.bodies(task_id)) == 1
    assert system.counter(system.rec.max_active(task_id)) == 1
    assert system.counter(system.rec.active(task_id)) == 0
    assert system.counter(system.rec.deliveries(task_id)) == len(outcomes)
    assert system.result(task_id).state == "SUCCESS"

    assert system.runs(task_id, *OVERLAP_STEPS) == dict.fromkeys(OVERLAP_STEPS, 1)
    assert result["order"] == "order-o"
    assert result["total"] == 10 + 20 + 30
    assert [s["pid"] for s in result["steps"]] == [holder.pid] * 3
    assert [s["index"] for s in result["steps"]] == [0, 1, 2]

    # Nothing counted as a death or a failed attempt; the at-most-once step was not
    # reported interrupted (that would be a StepInterruptedError entry).
    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert inv.error is None
    assert [(s.index, s.name, s.status, s.attempts, s.error) for s in inv.steps] == [
        (i, name, "completed", 1, None) for i, name in enumerate(OVERLAP_STEPS)
    ]
    assert [s.value for s in inv.steps] == result["steps"]
    meta = system.meta(task_id)
    assert meta.get("deaths", "0") == "0"  # a finished one keeps a count above 0 only
    assert "attempt" not in meta and "guard" not in meta
    assert meta["fence"] == first_fence, "no other execution ever took the lease"
    assert_finished_with_retention(system, task_id)


# -- 2. A lease taken over from a stalled holder ------------------------------------


def test_a_holder_whose_lease_was_taken_over_writes_nothing_more(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-1")
    # An hour of visibility timeout: the only deliveries are the two this test sends.
    a = system.start_worker(visibility_timeout=3600)
    system.send(task_id, "order-s", 3)
    assert system.wait_entered(task_id, "step-1") == a.pid
    held = system.meta(task_id)
    fence_a = int(held["fence"])
    assert held["lease"] == holder_of(a.pid)

    # A stalls inside step-1 (SIGSTOP: its heartbeat cannot renew the lease either),
    # and its lease is over.
    os.kill(a.pid, signal.SIGSTOP)
    try:
        system.expire_lease(task_id)
        # The same task id and arguments come again, and B takes the invocation over.
        system.block(task_id, "step-1")
        b = system.start_worker(visibility_timeout=3600)
        system.send(task_id, "order-s", 3)
        assert system.wait_entered(task_id, "step-1", times=2) == b.pid
        taken = system.meta(task_id)
        assert (taken["fence"], taken["lease"]) == (str(fence_a + 1), holder_of(b.pid))
        # A lease that ran out without being released is a death: B counted it as the
        # first attempt of step-1 (and moved it from ``deaths`` to the attempt record).
        attempt = json.loads(taken["attempt"])
        assert (attempt["n"], attempt["a"], attempt["e"]["type"]) == (
            "step-1",
            1,
            "WorkerLostError",
        )
    finally:
        os.kill(a.pid, signal.SIGCONT)

    # A wakes up; its heartbeat finds the lease gone while the step still runs.
    wait_for(
        lambda: f"invocation {task_id}: this execution lost its lease (fence {fence_a})" in a.log(),
        "A's heartbeat to notice that it lost the lease",
    )
    # Its run of step-1 returns: the write is refused, and the execution stops.
    system.release(task_id, "step-1", 1)
    [stopped] = system.wait_outcomes(task_id, 1)
    assert (stopped["state"], stopped["pid"], stopped["type"]) == ("IGNORED", a.pid, "Ignore")
    assert "another execution took its lease" in stopped["message"]
    refused = f"system.pipeline[{task_id}]: cannot write step 1 of invocation {task_id}: "
    assert refused + "another execution took its lease" in a.log()
    assert a.alive(), "a fenced-out execution ends the task, not the worker"

    # Nothing of A's reached the journal: step-1 is still B's, running its second attempt.
    during = system.invocation(task_id)
    assert during.status == "running"
    assert [(s.name, s.status, s.attempts) for s in during.steps] == [
        ("step-0", "completed", 1),
        ("step-1", "retrying", 1),
    ]
    assert during.steps[1].error is not None
    assert during.steps[1].error["type"] == "WorkerLostError"
    assert system.meta(task_id)["fence"] == str(fence_a + 1)
    assert system.counter(system.rec.bodies(task_id)) == 2

    # B goes on; its entries stand, and the result is its values.
    system.release(task_id, "step-1", 2)
    result = system.result(task_id).get(timeout=WAIT_TIMEOUT)
    _, done = system.wait_outcomes(task_id, 2)
    assert (done["state"], done["pid"], done["value"]) == ("SUCCESS", b.pid, result)
    assert [s["pid"] for s in result["steps"]] == [a.pid, b.pid, b.pid]
    assert result["total"] == 10 + 20 + 30

    # Each side effect as it happened: A's run of step-1 took place, but its value was
    # refused; step-2 ran in B only.
    assert system.runs(task_id, *PIPELINE_STEPS) == {"step-0": 1, "step-1": 2, "step-2": 1}
    assert system.pids(task_id, "step-1") == [a.pid, b.pid]
    assert system.counter(system.rec.bodies(task_id)) == 2
    assert system.counter(system.rec.deliveries(task_id)) == 2

    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("step-0", "completed", 1),
        ("step-1", "completed", 2),
        ("step-2", "completed", 1),
    ]
    assert [s.value for s in inv.steps] == result["steps"]
    assert inv.steps[0] == during.steps[0]
    assert_finished_with_retention(system, task_id)
    system.wait_settled()


# -- 3. Deaths outside any step -----------------------------------------------------


@pytest.mark.parametrize("n_steps", [2, 0], ids=["after-the-last-step", "step-less"])
def test_deaths_outside_any_step_end_under_the_tasks_policy(system: System, n_steps: int) -> None:
    """The body SIGKILLs its pool child after its steps (or having none) every time.

    The task's ``max_retries=1`` gives its default policy ``max_attempts=2``. A death at
    the journal's frontier may be the next step's (which journaled nothing yet), and a
    step judges its deaths by its own policy when it is reached again; so the start
    fails the invocation only after ``max_attempts + 1`` deaths in a row, one more than
    a step allows (README, "Crash loops end";
    ``test_a_step_that_kills_its_worker_every_time_ends_after_its_attempts``).
    """
    task_id = system.new_task_id()
    # An hour of visibility timeout: the message comes back only through the parent
    # rejecting it after each child's death (acks_late + reject_on_worker_lost).
    worker = system.start_worker(pool="prefork", visibility_timeout=3600)
    async_result = system.send_named(harness.DIE_OUTSIDE_STEPS, task_id, "order-d", n_steps)
    allowed = DIE_MAX_RETRIES + 2  # max_attempts + 1 deaths

    with pytest.raises(TerminalError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    error = raised.value
    assert error.error_type == "WorkerLostError"
    assert not isinstance(error, WorkerLostError), "the worker would requeue that for ever"
    assert f"journal position {n_steps}" in str(error)

    # Every execution that ran the body died in a new pool child, after running the
    # steps once between them; the last delivery ran nothing and failed.
    kills = [int(pid) for pid in system.client.lrange(system.rec.kills(task_id), 0, -1)]
    bodies = system.counter(system.rec.bodies(task_id))
    assert len(kills) == bodies
    assert len(set(kills)) == bodies, f"each death was a new pool child: {kills}"
    assert worker.pid not in kills
    steps = [f"step-{i}" for i in range(n_steps)]
    assert system.runs(task_id, *steps) == dict.fromkeys(steps, 1)
    assert system.counter(system.rec.deliveries(task_id)) == bodies + 1
    assert error.attempts == bodies, "the error counts the deaths"
    [outcome] = system.wait_outcomes(task_id, 1)
    assert (outcome["state"], outcome["type"]) == ("FAILURE", "TerminalError")
    assert outcome["pid"] not in (worker.pid, *kills)

    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        (name, "completed", 1) for name in steps
    ]
    assert inv.error is not None
    assert (inv.error["type"], inv.error["attempts"]) == ("WorkerLostError", bodies)
    assert inv.error["metadata"] == {"gave_up": "crash loop"}
    assert_finished_with_retention(system, task_id, steps=n_steps > 0)
    assert worker.alive()
    system.wait_settled()

    # Delivered again, it fails the same way without running the body.
    system.send_named(harness.DIE_OUTSIDE_STEPS, task_id, "order-d", n_steps)
    _, again = system.wait_outcomes(task_id, 2)
    assert (again["state"], again["type"]) == ("FAILURE", "TerminalError")
    assert system.counter(system.rec.bodies(task_id)) == bodies
    assert system.invocation(task_id) == inv

    # How many deaths it took: max_attempts + 1 of them.
    assert bodies == allowed, (
        f"the body ran, and its worker died, {bodies} times, but max_retries="
        f"{DIE_MAX_RETRIES} allows {allowed} deaths outside a step before the invocation "
        f"fails at its next start; the error says: {error}"
    )


# -- 4. Revocations and hard time limits -----------------------------------------------


@pytest.mark.parametrize("ending", ["revoke-terminate", "hard-time-limit"])
def test_an_execution_killed_from_outside_is_finished_in_the_journal(
    system: System, ending: str
) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-1")
    worker = system.start_worker(pool="prefork", visibility_timeout=3600)
    options: dict[str, Any] = {"time_limit": 2} if ending == "hard-time-limit" else {}
    async_result = system.send_with(harness.PIPELINE, task_id, ("order-k", 3), **options)
    child = system.wait_entered(task_id, "step-1")
    assert child != worker.pid
    if ending == "revoke-terminate":
        system.revoke(task_id, terminate=True)
    status, error_type, message, state = {
        "revoke-terminate": ("cancelled", "TaskRevokedError", "terminated", "REVOKED"),
        "hard-time-limit": ("failed", "TimeLimitExceeded", "hard time limit (2", "FAILURE"),
    }[ending]

    inv = wait_status(system, task_id, status)
    assert inv.error is not None
    assert inv.error["type"] == error_type
    assert message in inv.error["message"]
    assert [(s.name, s.status) for s in inv.steps] == [("step-0", "completed")]
    assert_finished_with_retention(system, task_id)
    wait_for(lambda: async_result.state == state, f"the result to be {state}")
    wait_for(lambda: not _alive(child), "the killed pool child to be gone")
    assert worker.alive()
    system.wait_settled()

    # A later delivery of the id (on a worker that never heard of the revoke) runs nothing.
    worker.kill()
    fresh = system.start_worker()
    system.send(task_id, "order-k", 3)
    # (The killed execution may have recorded an outcome of its own as it went down.)
    [later] = wait_for(
        lambda: [o for o in system.outcomes(task_id) if o["pid"] == fresh.pid],
        "the later delivery to end",
    )
    if ending == "revoke-terminate":
        assert (later["state"], later["type"]) == ("IGNORED", "Ignore")
        assert f"invocation {task_id} was cancelled" in later["message"]
    else:
        assert (later["state"], later["type"]) == ("FAILURE", "TimeLimitExceeded")
        assert "hard time limit (2" in later["message"]
    assert system.counter(system.rec.bodies(task_id)) == 1
    assert system.runs(task_id, *PIPELINE_STEPS) == {"step-0": 1, "step-1": 1, "step-2": 0}
    assert system.invocation(task_id) == inv
    system.wait_settled()


def test_a_revoked_invocation_waiting_for_its_retry_is_cancelled_in_the_journal(
    system: System,
) -> None:
    task_id = system.new_task_id()
    worker = system.start_worker(visibility_timeout=3600)
    # The first attempt of "flaky" fails; its retry is due 2 s later.
    system.send_named(harness.FLAKY, task_id, "order-c", countdown=2.0)

    def retry_held() -> bool:
        receipts = system.receipts(task_id)
        return len(receipts) == 2 and receipts[1]["eta"] is not None and system.unacked() == 1

    wait_for(retry_held, "the worker to hold the retried message as an ETA task")
    before = system.invocation(task_id)
    assert before.status == "running"
    assert [(s.name, s.status) for s in before.steps][-1] == ("flaky", "retrying")

    system.revoke(task_id)
    # The worker discards the message when its ETA comes, and journals the revocation.
    inv = wait_status(system, task_id, "cancelled")
    assert inv.error is not None
    assert (inv.error["type"], inv.error["message"]) == ("TaskRevokedError", "revoked")
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("prep-0", "completed", 1),
        ("prep-1", "completed", 1),
    ]
    assert_finished_with_retention(system, task_id)
    assert "attempt" not in system.meta(task_id)
    wait_for(lambda: system.unacked() == 0, "the revoked message to be acked")
    assert system.queued() == 0
    assert f"Discarding revoked task: system.flaky[{task_id}]" in worker.log()

    # The retry never ran: one execution, one (failed) run of the step.
    assert system.runs(task_id, "prep-0", "prep-1", "flaky") == {
        "prep-0": 1,
        "prep-1": 1,
        "flaky": 1,
    }
    assert system.counter(system.rec.bodies(task_id)) == 1
    assert system.counter(system.rec.deliveries(task_id)) == 1
    assert [o["state"] for o in system.outcomes(task_id)] == ["RETRY"]
    assert system.result(task_id).state == "REVOKED"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
