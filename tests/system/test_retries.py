"""Step retries with real workers: a retry on another process, crash loops, at-most-once.

Every test asserts what ran (counted by the step functions, outside the worker), what
the caller or the handler got, and what the journal holds afterwards.
"""

from __future__ import annotations

import signal

import pytest

from celery_durable import StepInterruptedError, TerminalError
from tests.processes import WAIT_TIMEOUT, wait_for
from tests.system import harness
from tests.system.proj import FLAKY_COUNTDOWN, RETRY_IDIOM_MAX_RETRIES
from tests.system.workers import System

pytestmark = pytest.mark.system


def test_a_failed_step_is_retried_by_another_worker_process(system: System) -> None:
    task_id = system.new_task_id()
    # An hour of visibility timeout: worker A never restores the retried message itself
    # while it holds it as an ETA task.
    a = system.start_worker(visibility_timeout=3600)
    system.send_named(harness.FLAKY, task_id, "order-r1")

    # The first attempt of "flaky" fails in A; Celery sends the retry with an ETA, and A
    # takes that message at once and keeps it, unacked, until the ETA.
    def retry_held_by_a() -> bool:
        receipts = system.receipts(task_id)
        return (
            len(receipts) == 2
            and receipts[1]["eta"] is not None
            and system.result(task_id).state == "RETRY"
            and system.unacked() == 1
            and system.queued() == 0
        )

    wait_for(retry_held_by_a, "worker A to hold the retried message as an ETA task")
    assert [r["pid"] for r in system.receipts(task_id)] == [a.pid, a.pid]
    [retried] = system.outcomes(task_id)
    assert retried["state"] == "RETRY"
    assert retried["pid"] == a.pid
    assert retried["type"] == "Retry"
    assert retried["retries"] == 0

    # The failed attempt is in the journal, not only in A's memory.
    before = system.invocation(task_id)
    assert before.status == "running"
    assert [(s.index, s.name, s.status, s.attempts) for s in before.steps] == [
        (0, "prep-0", "completed", 1),
        (1, "prep-1", "completed", 1),
        (2, "flaky", "retrying", 1),
    ]
    pending = before.steps[2]
    assert pending.error is not None
    assert pending.error["type"] == "ValueError"
    assert pending.error["message"] == "flaky fails its first attempt"
    assert pending.started_at is not None

    a.kill()
    assert a.process.returncode == -signal.SIGKILL
    assert system.pids(task_id, "flaky") == [a.pid], (
        f"A ran the retry before it was killed: raise FLAKY_COUNTDOWN ({FLAKY_COUNTDOWN}s)"
    )
    assert system.unacked() == 1, "A died holding the retried message, unacked"

    # B restores the unacked message once it is 3 s old. The ETA is 4 s after the
    # failure, so B holds it at most about a second: never long enough to restore it
    # a second time and run it twice.
    b = system.start_worker(visibility_timeout=3)
    result = system.result(task_id).get(timeout=WAIT_TIMEOUT)

    assert system.pids(task_id, "flaky") == [a.pid, b.pid]
    assert system.runs(task_id, "prep-0", "prep-1", "flaky") == {
        "prep-0": 1,
        "prep-1": 1,
        "flaky": 2,
    }
    assert system.counter(system.rec.bodies(task_id)) == 2
    assert system.counter(system.rec.deliveries(task_id)) == 2
    assert [r["pid"] for r in system.receipts(task_id)] == [a.pid, a.pid, b.pid]

    assert result["order"] == "order-r1"
    flaky = result["steps"][2]
    assert (flaky["name"], flaky["run"], flaky["pid"]) == ("flaky", 2, b.pid)
    assert result["steps"][:2] == [s.value for s in before.steps[:2]]
    assert [s["pid"] for s in result["steps"][:2]] == [a.pid, a.pid]

    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert [(s.index, s.name, s.status, s.attempts) for s in inv.steps] == [
        (0, "prep-0", "completed", 1),
        (1, "prep-1", "completed", 1),
        (2, "flaky", "completed", 2),
    ]
    assert inv.steps[:2] == before.steps[:2], "the earlier steps' entries are unchanged"
    assert inv.steps[2].value == flaky
    assert inv.steps[2].error is None
    # The second attempt waited for the policy's countdown from the first failure.
    started_again = inv.steps[2].started_at
    assert started_again is not None
    waited = (started_again - pending.started_at).total_seconds()
    assert waited >= FLAKY_COUNTDOWN - 0.5, f"the retry ran {waited:.2f}s after the failure"

    _, done = system.wait_outcomes(task_id, 2)
    assert (done["state"], done["pid"], done["value"]) == ("SUCCESS", b.pid, result)
    assert done["retries"] == 1, "a real Celery retry: request.retries grew"
    wait_for(lambda: system.unacked() == 0, "the retried message to be acked")
    assert system.queued() == 0


def test_a_failure_and_a_worker_death_together_spend_a_steps_attempts(system: System) -> None:
    task_id = system.new_task_id()
    # The first attempt of "flaky" raises; its retry, half a second later, blocks.
    system.block(task_id, "flaky")
    a = system.start_worker(visibility_timeout=3600)
    async_result = system.send_named(
        harness.FLAKY, task_id, "order-r2", countdown=0.5, max_attempts=2
    )
    assert system.wait_entered(task_id, "flaky", times=2) == a.pid
    held = system.invocation(task_id)
    assert [(s.name, s.status, s.attempts) for s in held.steps] == [
        ("prep-0", "completed", 1),
        ("prep-1", "completed", 1),
        ("flaky", "retrying", 1),
    ]
    a.kill()

    # B counts A's death as the second attempt. With max_attempts=2 the policy is spent
    # by one raised error and one death: the step fails without a third run.
    b = system.start_worker()
    with pytest.raises(TerminalError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    assert raised.value.error_type == "WorkerLostError"
    assert raised.value.attempts == 2

    assert system.runs(task_id, "prep-0", "prep-1", "flaky") == {
        "prep-0": 1,
        "prep-1": 1,
        "flaky": 2,
    }
    assert system.pids(task_id, "flaky") == [a.pid, a.pid]
    assert system.counter(system.rec.bodies(task_id)) == 3
    retried, failed = system.wait_outcomes(task_id, 2)
    assert (retried["state"], retried["pid"]) == ("RETRY", a.pid)
    assert (failed["state"], failed["pid"], failed["type"]) == ("FAILURE", b.pid, "TerminalError")

    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("prep-0", "completed", 1),
        ("prep-1", "completed", 1),
        ("flaky", "failed", 2),
    ]
    assert inv.steps[:2] == held.steps[:2]
    error = inv.steps[2].error
    assert error is not None
    assert (error["type"], error["attempts"]) == ("WorkerLostError", 2)
    assert error["metadata"] == {"gave_up": "all 2 attempts failed"}


def test_a_step_that_kills_its_worker_every_time_ends_after_its_attempts(
    system: System,
) -> None:
    task_id = system.new_task_id()
    # An hour of visibility timeout: the message comes back only through the parent
    # rejecting it after each child's death (acks_late + reject_on_worker_lost).
    worker = system.start_worker(pool="prefork", visibility_timeout=3600)
    async_result = system.send_named(harness.CRASH_LOOP, task_id, "order-r2")

    # max_retries=2 gives "crash" three attempts; each kills its child. The fourth
    # execution counts three deaths and fails the step without running it.
    with pytest.raises(TerminalError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    error = raised.value
    assert error.error_type == "WorkerLostError"
    assert error.attempts == 3
    assert "worker died while step 'crash' ran" in str(error)

    assert system.runs(task_id, "step-0", "crash", "after") == {
        "step-0": 1,
        "crash": 3,
        "after": 0,
    }
    children = system.pids(task_id, "crash")
    assert len(set(children)) == 3, f"each attempt ran in a new pool child: {children}"
    assert worker.pid not in children
    assert system.counter(system.rec.bodies(task_id)) == 4
    assert system.counter(system.rec.deliveries(task_id)) == 4
    assert [r["pid"] for r in system.receipts(task_id)] == [worker.pid] * 4

    # Only the last execution ended; the killed ones recorded nothing.
    [outcome] = system.wait_outcomes(task_id, 1)
    assert outcome["state"] == "FAILURE"
    assert outcome["type"] == "TerminalError"
    assert outcome["pid"] not in (worker.pid, *children)

    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert [(s.index, s.name, s.status, s.attempts) for s in inv.steps] == [
        (0, "step-0", "completed", 1),
        (1, "crash", "failed", 3),
    ]
    step_error = inv.steps[1].error
    assert step_error is not None
    assert step_error["type"] == "WorkerLostError"
    assert step_error["attempts"] == 3
    assert step_error["metadata"] == {"gave_up": "all 3 attempts failed"}
    assert inv.error is not None
    assert (inv.error["type"], inv.error["attempts"]) == ("WorkerLostError", 3)

    # The worker itself survived its children, and the failed message was acked.
    assert worker.alive()
    wait_for(lambda: system.unacked() == 0, "the failed message to be acked")
    assert system.queued() == 0
    assert worker.alive()


def test_an_interrupted_at_most_once_step_raises_and_never_runs_again(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "pay")
    first = system.start_worker()
    system.send_named(harness.AT_MOST_ONCE, task_id, "order-r3")
    assert system.wait_entered(task_id, "pay") == first.pid
    journal = system.invocation(task_id)
    assert [(s.name, s.status) for s in journal.steps] == [("step-0", "completed")]
    first.kill()

    # The next execution finds the guard of "pay": the handler gets StepInterruptedError
    # and compensates. Kill it inside the compensation too.
    system.block(task_id, "refund")
    second = system.start_worker()
    assert system.wait_entered(task_id, "refund") == second.pid
    [caught] = system.caught(task_id)
    assert caught["class"] == "StepInterruptedError"
    assert caught["interrupted"] is True
    assert caught["error_type"] == "StepInterruptedError"
    assert caught["attempts"] == 1
    assert "died inside at-most-once step 'pay'" in caught["message"]
    assert caught["pid"] == second.pid
    interrupted = system.invocation(task_id)
    assert [(s.name, s.status, s.attempts) for s in interrupted.steps] == [
        ("step-0", "completed", 1),
        ("pay", "failed", 1),
    ]
    pay_error = interrupted.steps[1].error
    assert pay_error is not None
    assert pay_error["type"] == "StepInterruptedError"
    second.kill()

    # A third execution replays the journaled interruption: "pay" still does not run.
    third = system.start_worker()
    result = system.result(task_id).get(timeout=WAIT_TIMEOUT)
    assert result["order"] == "order-r3"
    assert result["paid"] is None
    assert result["refund"]["pid"] == third.pid
    assert result["steps"] == [journal.steps[0].value]

    assert system.runs(task_id, "step-0", "pay", "refund") == {
        "step-0": 1,
        "pay": 1,
        "refund": 2,
    }
    assert system.pids(task_id, "pay") == [first.pid]
    assert system.counter(system.rec.bodies(task_id)) == 3
    replayed = system.caught(task_id)
    assert len(replayed) == 2
    assert replayed[1] == {**caught, "pid": third.pid}, "the replay raised the same error"

    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("step-0", "completed", 1),
        ("pay", "failed", 1),
        ("refund", "completed", 2),
    ]
    assert inv.steps[:2] == interrupted.steps
    assert inv.steps[2].value == result["refund"]

    # Delivered again under the same id, it returns the recorded result; nothing runs.
    system.send_named(harness.AT_MOST_ONCE, task_id, "order-r3")
    *_, again = system.wait_outcomes(task_id, 2)
    assert again["state"] == "SUCCESS"
    assert again["value"] == result
    assert system.counter(system.rec.bodies(task_id)) == 3
    assert system.runs(task_id, "pay") == {"pay": 1}
    assert len(system.caught(task_id)) == 2
    assert system.invocation(task_id) == inv


def test_an_uncaught_interruption_fails_the_task_for_good(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "pay")
    first = system.start_worker()
    async_result = system.send_named(harness.AT_MOST_ONCE, task_id, "order-r4", False)
    system.wait_entered(task_id, "pay")
    first.kill()

    system.start_worker()
    with pytest.raises(StepInterruptedError) as raised:
        async_result.get(timeout=WAIT_TIMEOUT)
    assert raised.value.error_type == "StepInterruptedError"
    assert raised.value.attempts == 1
    assert "died inside at-most-once step 'pay'" in str(raised.value)
    [outcome] = system.wait_outcomes(task_id, 1)
    assert (outcome["state"], outcome["type"]) == ("FAILURE", "StepInterruptedError")

    assert system.runs(task_id, "step-0", "pay", "refund") == {"step-0": 1, "pay": 1, "refund": 0}
    assert system.caught(task_id) == []
    assert system.counter(system.rec.bodies(task_id)) == 2
    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("step-0", "completed", 1),
        ("pay", "failed", 1),
    ]
    assert inv.steps[1].error is not None
    assert inv.steps[1].error["type"] == "StepInterruptedError"
    assert inv.error is not None
    assert inv.error["type"] == "StepInterruptedError"

    # Delivered again, it fails the same way without running anything.
    system.send_named(harness.AT_MOST_ONCE, task_id, "order-r4", False)
    _, again = system.wait_outcomes(task_id, 2)
    assert (again["state"], again["type"]) == ("FAILURE", "StepInterruptedError")
    assert system.counter(system.rec.bodies(task_id)) == 2
    assert system.runs(task_id, "pay") == {"pay": 1}
    assert system.invocation(task_id) == inv


def test_an_at_most_once_step_that_raises_is_retried_like_any_other(system: System) -> None:
    """No execution dies here: the step raises, so its policy retries it and it runs again.

    At-most-once only changes what happens after an execution died inside the step.
    """
    task_id = system.new_task_id()
    worker = system.start_worker()
    async_result = system.send_named(
        harness.FLAKY, task_id, "order-r7", countdown=0.5, at_most_once=True
    )
    try:
        result = async_result.get(timeout=WAIT_TIMEOUT)
    except TerminalError as exc:
        inv = system.invocation(task_id)
        pytest.fail(
            f"the Celery retry of at-most-once step 'flaky', which raised ValueError on its "
            f"first attempt while no worker died, raised {exc!r} instead of running it; "
            f"runs {system.runs(task_id, 'flaky')}, journal {inv.steps[2]}"
        )
    assert system.runs(task_id, "flaky") == {"flaky": 2}
    assert system.pids(task_id, "flaky") == [worker.pid, worker.pid]
    assert result["steps"][2]["run"] == 2
    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("prep-0", "completed", 1),
        ("prep-1", "completed", 1),
        ("flaky", "completed", 2),
    ]


# -- Celery's retry idiom: a worker that dies between the step's failure and the retry ----


def test_a_death_after_the_retry_reopened_the_step_leaves_the_new_journal(
    system: System,
) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "publish")
    # An hour of visibility timeout: A never gives its own message back while it blocks.
    a = system.start_worker(visibility_timeout=3600)
    async_result = system.send_named(harness.RETRY_IDIOM, task_id, "order-i1")

    # A caught the failure of "fetch" and retried: the release re-opened the step, and
    # the retry's message is about to be published when A dies.
    assert system.wait_entered(task_id, "publish") == a.pid
    reopened = system.invocation(task_id)
    assert [(s.name, s.status, s.attempts) for s in reopened.steps] == [
        ("prepare", "completed", 1),
        ("fetch", "retrying", 1),  # no entry: the attempt record, as before a retry
    ]
    meta = system.meta(task_id)
    assert "lease" not in meta, "the same write released the lease"
    assert system.client.llen(system.journal_keys(task_id).journal) == 1
    a.kill()

    # B gets the original message back: the step runs again, "prepare" replays.
    b = system.start_worker(visibility_timeout=3)
    result = async_result.get(timeout=WAIT_TIMEOUT)
    assert result["fetch"]["run"] == 2
    assert result["fetch"]["pid"] == b.pid
    assert result["prepare"] == reopened.steps[0].value
    assert system.runs(task_id, "prepare", "fetch", "before-retry", "publish") == {
        "prepare": 1,
        "fetch": 2,
        "before-retry": 1,
        "publish": 1,
    }
    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("prepare", "completed", 1),
        ("fetch", "completed", 2),
    ]
    assert system.meta(task_id).get("deaths", "0") == "0", "a released lease is no death"


def test_a_death_before_the_retry_leaves_the_old_journal_whose_failure_replays(
    system: System,
) -> None:
    """The failure was journaled and the body died before its retry: the redelivery
    replays it and, having replayed it, never re-opens it (logged as a WARNING)."""
    task_id = system.new_task_id()
    system.block(task_id, "before-retry")
    a = system.start_worker(visibility_timeout=3600)
    async_result = system.send_named(harness.RETRY_IDIOM, task_id, "order-i2")
    assert system.wait_entered(task_id, "before-retry") == a.pid
    old = system.invocation(task_id)
    assert [(s.name, s.status, s.attempts) for s in old.steps] == [
        ("prepare", "completed", 1),
        ("fetch", "failed", 1),
    ]
    assert "lease" in system.meta(task_id)
    a.kill()

    b = system.start_worker(visibility_timeout=3)
    with pytest.raises(ValueError, match=r"^fetch fails its first attempt$"):
        async_result.get(timeout=WAIT_TIMEOUT)
    assert system.runs(task_id, "prepare", "fetch", "before-retry", "publish") == {
        "prepare": 1,
        "fetch": 1,
        "before-retry": 1 + RETRY_IDIOM_MAX_RETRIES + 1,
        "publish": RETRY_IDIOM_MAX_RETRIES,
    }
    inv = system.invocation(task_id)
    assert inv.status == "failed"
    assert inv.steps == old.steps
    warned = [line for line in b.log().splitlines() if "Task.retry() after step 'fetch'" in line]
    assert len(warned) == RETRY_IDIOM_MAX_RETRIES
    assert all(task_id in line and "RetryableError(retry_after=" in line for line in warned)
