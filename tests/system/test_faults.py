"""Faults with real workers: SIGKILL mid-step, redelivery, changed code, reused task ids.

Every test asserts what ran (counted by the step functions, outside the worker) and
what the journal holds afterwards, not only that the task finished.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from celery_durable import (
    InvocationConflictError,
    NonDeterminismError,
    TerminalError,
    resume_invocation,
)
from celery_durable.rand import DurableRandom
from tests.processes import WAIT_TIMEOUT, wait_for
from tests.system.harness import step_name
from tests.system.workers import BOTH_BROKERS, System, is_deferral

pytestmark = pytest.mark.system

STEPS = [step_name(i) for i in range(4)]
TOTAL = 10 + 20 + 30 + 40


def expected_draws(seed: int, n_steps: int) -> list[str]:
    """The values the pipeline draws, computed from the journal's seed alone."""
    draws = [str(DurableRandom(seed, 0).uuid4())]
    draws += [str(DurableRandom(seed, i + 1).uint64()) for i in range(n_steps)]
    return draws


def assert_completed_journal(
    system: System, task_id: str, result: dict[str, Any], attempts: dict[str, int] | None = None
) -> None:
    """The journal holds every step, completed, with the values the result carries."""
    attempts = {**dict.fromkeys(STEPS, 1), **(attempts or {})}
    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.task_name == "system.pipeline"
    assert inv.result == result
    assert inv.error is None
    assert inv.paused_reason is None
    assert [(s.index, s.name, s.kind, s.status, s.attempts) for s in inv.steps] == [
        (i, name, "run", "completed", attempts[name]) for i, name in enumerate(STEPS)
    ]
    assert [s.value for s in inv.steps] == result["steps"]
    assert inv.seed is not None
    assert result["draws"] == expected_draws(inv.seed, len(STEPS))


def assert_replayed_after_kill_in_step_2(
    system: System, task_id: str, order: str, executions: int
) -> dict[str, Any]:
    """What must hold once an execution died in step-2 and a later one finished."""
    result: dict[str, Any] = system.result(task_id).get(timeout=WAIT_TIMEOUT)
    assert result["order"] == order
    assert result["total"] == TOTAL
    assert [s["index"] for s in result["steps"]] == [0, 1, 2, 3]

    # Steps before the kill ran once, the interrupted one twice, the later one once.
    assert system.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 1}
    assert system.counter(system.rec.bodies(task_id)) == executions

    # Every execution drew the same values; the killed one stopped after drawing 3.
    draws = system.executions(task_id)
    assert len(draws[0]) == 3
    assert draws[-1] == result["draws"]
    assert all(d == draws[-1][: len(d)] for d in draws)
    assert len(set(draws[-1])) == len(draws[-1])

    # The worker's death counts as the first attempt of step-2.
    assert_completed_journal(system, task_id, result, attempts={"step-2": 2})
    # The backend has the result before task_postrun records it: wait for the record.
    # The killed execution recorded no outcome; any between it and the last one retried.
    # A delivery that came back while the dead worker's lease still ran (at once, on
    # RabbitMQ) deferred itself: it ran no body and is no execution.
    outcomes = system.wait_executions_ended(task_id, executions - 1)
    assert [o["state"] for o in outcomes] == ["RETRY"] * (executions - 2) + ["SUCCESS"]
    assert outcomes[-1]["value"] == result
    deferrals = [o for o in system.outcomes(task_id) if is_deferral(o)]
    assert system.counter(system.rec.deliveries(task_id)) == executions + len(deferrals)
    return result


@BOTH_BROKERS
def test_sigkill_of_a_solo_worker_mid_step_replays_the_finished_steps(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-2")
    first = system.start_worker()
    system.send(task_id, "order-1", len(STEPS))

    # The solo worker runs the task in its own process, now inside step-2.
    assert system.wait_entered(task_id, "step-2") == first.pid
    before = system.invocation(task_id)
    assert before.status == "running"
    assert [(s.name, s.status) for s in before.steps] == [
        ("step-0", "completed"),
        ("step-1", "completed"),
    ]

    first.kill()
    assert first.process.returncode == -signal.SIGKILL
    # Not acked: the message waits in this test's unacked hash for redelivery (Redis),
    # or is back in the queue (RabbitMQ saw the connection close).
    system.wait_redelivery_pending()

    # The next execution counts the death as the first attempt of step-2 and runs it
    # again at once: the redelivery was the retry.
    second = system.start_worker()
    result = assert_replayed_after_kill_in_step_2(system, task_id, "order-1", executions=2)

    # Replayed steps handed back what the first worker journaled; the rest ran anew.
    assert [s["pid"] for s in result["steps"]] == [first.pid, first.pid, second.pid, second.pid]
    assert result["steps"][:2] == [s.value for s in before.steps]
    assert system.pids(task_id, "step-2") == [first.pid, second.pid]
    system.wait_settled()


@BOTH_BROKERS
def test_sigkill_of_a_prefork_child_mid_step_requeues_and_replays(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-2")
    # An hour of visibility timeout: the message can only come back through the parent
    # rejecting it (acks_late + reject_on_worker_lost), not through kombu's restore
    # (RabbitMQ has none: the worker's connection stays open).
    worker = system.start_worker(pool="prefork", visibility_timeout=3600)
    system.send(task_id, "order-2", len(STEPS))

    child = system.wait_entered(task_id, "step-2")
    assert child != worker.pid
    assert [s.name for s in system.invocation(task_id).steps] == ["step-0", "step-1"]
    os.kill(child, signal.SIGKILL)

    # The requeued execution counts the death as an attempt and runs step-2 again at once.
    result = assert_replayed_after_kill_in_step_2(system, task_id, "order-2", executions=2)

    new_child = system.pids(task_id, "step-2")[1]
    assert new_child not in (child, worker.pid)
    assert [s["pid"] for s in result["steps"]] == [child, child, new_child, new_child]
    assert worker.alive(), "only the pool child was killed; the worker itself stays up"
    assert "WorkerLostError" in worker.log()


def test_a_finished_invocation_delivered_again_returns_the_recorded_result(
    system: System,
) -> None:
    task_id = system.new_task_id()
    # Hold the first delivery after it finished but before its late ack, then kill it:
    # the broker delivers the message again although the invocation is complete.
    system.hold_after(task_id)
    first = system.start_worker()
    system.send(task_id, "order-3", len(STEPS))
    [done] = system.wait_outcomes(task_id, 1)
    assert done["state"] == "SUCCESS"
    result = done["value"]
    assert result["total"] == TOTAL
    journal = system.invocation(task_id)
    assert journal.status == "completed"
    first.kill()
    assert system.client.hlen(f"{system.prefix}:kombu:unacked") == 1

    system.start_worker()
    _, redelivered = system.wait_outcomes(task_id, 2)
    assert redelivered["state"] == "SUCCESS"
    assert redelivered["value"] == result

    # Sent again by a client with the same id and arguments.
    system.send(task_id, "order-3", len(STEPS))
    _, _, resent = system.wait_outcomes(task_id, 3)
    assert resent["state"] == "SUCCESS"
    assert resent["value"] == result

    # Neither later delivery ran the body or a step, nor changed the journal.
    assert system.counter(system.rec.deliveries(task_id)) == 3
    assert system.counter(system.rec.bodies(task_id)) == 1
    assert system.runs(task_id, *STEPS) == dict.fromkeys(STEPS, 1)
    assert system.invocation(task_id) == journal
    assert system.result(task_id).get(timeout=WAIT_TIMEOUT) == result
    assert_completed_journal(system, task_id, result)


def test_changed_step_names_on_replay_pause_the_invocation(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-2")
    first = system.start_worker()
    system.send(task_id, "order-4", len(STEPS))
    system.wait_entered(task_id, "step-2")
    journal = system.invocation(task_id)
    assert [s.name for s in journal.steps] == ["step-0", "step-1"]
    first.kill()

    # New code asks for "step-1-v2" where the journal recorded "step-1".
    system.start_worker(rename="step-1=step-1-v2")
    [outcome] = system.wait_outcomes(task_id, 1)
    assert outcome["state"] == "FAILURE"
    assert outcome["type"] == "NonDeterminismError"

    async_result = system.result(task_id)
    assert async_result.state == "FAILURE"
    with pytest.raises(NonDeterminismError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    message = str(raised.value)
    assert task_id in message
    assert "journal index 1" in message
    assert "recorded run 'step-1'" in message
    assert "asked for run 'step-1-v2'" in message

    paused = system.invocation(task_id)
    assert paused.status == "paused"
    assert paused.paused_reason == message
    assert paused.steps == journal.steps, "the journal is kept as it was"
    assert paused.seed == journal.seed
    assert paused.result is None
    assert system.runs(task_id, *STEPS, "step-1-v2") == {
        "step-0": 1,
        "step-1": 1,
        "step-2": 1,
        "step-3": 0,
        "step-1-v2": 0,
    }
    first_draws, second_draws = system.executions(task_id)
    assert second_draws == first_draws[:2], "it stopped at index 1, after drawing 2 values"

    # Paused, not lost: code that asks for the recorded steps again finishes it once an
    # operator resumes it (here without publishing: the task is sent again with the same
    # id and arguments).
    system.kill_all()
    system.start_worker()
    assert resume_invocation(system.app, task_id, publish=False).previous_status == "paused"
    system.send(task_id, "order-4", len(STEPS))
    _, resumed = system.wait_outcomes(task_id, 2)
    assert resumed["state"] == "SUCCESS"
    result = resumed["value"]
    assert result["total"] == TOTAL
    assert system.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 1}
    assert result["steps"][:2] == [s.value for s in journal.steps]
    *_, third_draws = system.executions(task_id)
    assert third_draws == result["draws"]
    assert third_draws[:3] == first_draws
    # One worker died inside step-2, so it ran twice; but a resume gives every step a
    # fresh set of attempts, so the journal counts the run after it only.
    assert_completed_journal(system, task_id, result)


def test_a_reused_task_id_with_other_arguments_is_refused(system: System) -> None:
    task_id = system.new_task_id()
    system.start_worker()
    result = system.send(task_id, "order-5", len(STEPS)).get(timeout=WAIT_TIMEOUT)
    journal = system.invocation(task_id)

    system.send(task_id, "order-5-other", len(STEPS))
    _, refused = system.wait_outcomes(task_id, 2)
    assert refused["state"] == "FAILURE"
    assert refused["type"] == "InvocationConflictError"
    assert task_id in refused["message"]
    assert "other arguments" in refused["message"]

    # No step and no body ran for the second delivery; the journal is as it was.
    assert system.counter(system.rec.bodies(task_id)) == 1
    assert system.runs(task_id, *STEPS) == dict.fromkeys(STEPS, 1)
    assert system.invocation(task_id) == journal
    assert_completed_journal(system, task_id, result)
    # Celery never overwrites a SUCCESS in the result backend: the first result stands.
    assert system.result(task_id).get(timeout=WAIT_TIMEOUT) == result

    # Where no success is stored under the id, the refusal reaches the caller.
    quiet_id = system.new_task_id()
    system.send(quiet_id, "order-5", len(STEPS), ignore_result=True)
    [first] = system.wait_outcomes(quiet_id, 1)
    assert first["state"] == "SUCCESS"
    quiet_journal = system.invocation(quiet_id)
    conflicting = system.send(quiet_id, "order-5-other", len(STEPS))
    with pytest.raises(InvocationConflictError, match="other arguments"):
        conflicting.get(timeout=WAIT_TIMEOUT)
    wait_for(lambda: len(system.outcomes(quiet_id)) == 2, "the refusal to be recorded")
    assert system.invocation(quiet_id) == quiet_journal
    assert system.runs(quiet_id, *STEPS) == dict.fromkeys(STEPS, 1)
    assert system.counter(system.rec.bodies(quiet_id)) == 1


def test_a_conflicting_delivery_while_interrupted_leaves_the_invocation_alone(
    system: System,
) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-2")
    first = system.start_worker()
    system.send(task_id, "order-6", len(STEPS))
    system.wait_entered(task_id, "step-2")
    journal = system.invocation(task_id)
    first.kill()

    # A worker that never redelivers the interrupted message (hour-long visibility
    # timeout) gets a delivery of the same task id with other arguments.
    system.start_worker(visibility_timeout=3600)
    system.send(task_id, "order-6-other", len(STEPS))
    [refused] = system.wait_outcomes(task_id, 1)
    assert refused["type"] == "InvocationConflictError"
    after = system.invocation(task_id)
    assert (after.status, after.steps, after.seed) == (journal.status, journal.steps, journal.seed)
    assert system.counter(system.rec.bodies(task_id)) == 1
    system.kill_all()

    # The interrupted message comes back; the invocation finishes with its own arguments.
    # max_retries=1 gives step-2 two attempts: one worker death leaves it one more.
    system.start_worker(max_retries=1)
    _, done = system.wait_outcomes(task_id, 2)
    assert done["state"] == "SUCCESS", f"the refused delivery cost step-2 an attempt: {done}"
    result = done["value"]
    assert result["order"] == "order-6"
    assert system.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 1}
    # One worker died in step-2; the refused delivery is no attempt of it.
    assert_completed_journal(system, task_id, result, attempts={"step-2": 2})


def test_a_step_whose_worker_keeps_dying_fails_for_good(system: System) -> None:
    task_id = system.new_task_id()
    # max_retries=1: step-2 gets two attempts, and the worker dies in both.
    for attempt in (1, 2):
        system.block(task_id, "step-2")
        worker = system.start_worker(max_retries=1)
        if attempt == 1:
            system.send(task_id, "order-7", len(STEPS))
        assert system.wait_entered(task_id, "step-2", times=attempt) == worker.pid
        worker.kill()

    system.start_worker(max_retries=1)
    async_result = system.result(task_id)
    with pytest.raises(TerminalError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    assert "worker died" in str(raised.value)
    [outcome] = system.wait_outcomes(task_id, 1)
    assert outcome["state"] == "FAILURE"

    # Step-2 did not run a third time, and nothing after it ran.
    assert system.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 0}
    assert system.counter(system.rec.bodies(task_id)) == 3
    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("step-0", "completed", 1),
        ("step-1", "completed", 1),
        ("step-2", "failed", 2),
    ]
    error = inv.steps[2].error
    assert error is not None
    assert error["type"] == "WorkerLostError"
    assert error["attempts"] == 2
    assert inv.error is not None
    assert inv.error["type"] == "WorkerLostError"

    # Delivered again, it stays failed without running anything.
    system.send(task_id, "order-7", len(STEPS))
    _, again = system.wait_outcomes(task_id, 2)
    assert again["state"] == "FAILURE"
    assert again["type"] == "TerminalError"
    assert system.counter(system.rec.bodies(task_id)) == 3
    assert system.runs(task_id, "step-2", "step-3") == {"step-2": 2, "step-3": 0}
