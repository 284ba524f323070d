"""Recovery with real workers: a running invocation whose message was lost is published
again by a worker's sweep, and nothing that waits on purpose is.

Every test asserts what ran (counted by the step functions, outside the worker), what
the worker logged about recovering, and what the journal holds afterwards.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.processes import WAIT_TIMEOUT, wait_for
from tests.system import harness
from tests.system.harness import step_name
from tests.system.workers import BOTH_BROKERS, System

pytestmark = pytest.mark.system

#: The workers' durable_recovery_after in these tests, seconds.
RECOVERY_AFTER = 2.0
#: What a worker logs when it publishes a lost invocation again.
RECOVERED = "recovered invocation {}:"
STEPS = [step_name(i) for i in range(4)]


@BOTH_BROKERS
def test_a_killed_workers_invocation_whose_message_was_lost_is_recovered(system: System) -> None:
    task_id = system.new_task_id()
    system.block(task_id, "step-2")
    # An hour of visibility timeout: no worker gives the killed worker's message back.
    a = system.start_worker(visibility_timeout=3600, recovery_after=RECOVERY_AFTER)
    system.send(task_id, "order-l", len(STEPS))
    assert system.wait_entered(task_id, "step-2") == a.pid
    before = system.invocation(task_id)
    assert [(s.name, s.status) for s in before.steps] == [
        ("step-0", "completed"),
        ("step-1", "completed"),
    ]

    a.kill()
    assert a.process.returncode == -signal.SIGKILL
    if system.broker == harness.AMQP:
        # RabbitMQ requeued it when the connection closed: the broker loses it now.
        system.wait_redelivery_pending()
    system.lose_messages()
    assert system.queued() == 0
    if system.broker == harness.REDIS:
        assert system.unacked() == 0

    b = system.start_worker(visibility_timeout=3600, recovery_after=RECOVERY_AFTER)
    ready = time.monotonic()
    result = system.result(task_id).get(timeout=WAIT_TIMEOUT)
    took = time.monotonic() - ready
    # Its lease (1 s) ran out while B started: B's first sweeps publish it.
    assert took < RECOVERY_AFTER + 10, f"recovered {took:.1f} s after the worker was ready"
    assert RECOVERED.format(task_id) in b.log()
    assert b.log().count(RECOVERED.format(task_id)) == 1

    # Earlier steps replayed from the journal; the interrupted one ran again, in B.
    assert system.runs(task_id, *STEPS) == {"step-0": 1, "step-1": 1, "step-2": 2, "step-3": 1}
    assert [s["pid"] for s in result["steps"]] == [a.pid, a.pid, b.pid, b.pid]
    assert result["steps"][:2] == [s.value for s in before.steps]
    assert system.counter(system.rec.bodies(task_id)) == 2
    assert system.counter(system.rec.deliveries(task_id)) == 2
    [done] = system.wait_outcomes(task_id, 1)
    assert (done["state"], done["pid"], done["value"]) == ("SUCCESS", b.pid, result)

    inv = system.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    # A's death counts as the first attempt of step-2: its lease ran out unreleased.
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("step-0", "completed", 1),
        ("step-1", "completed", 1),
        ("step-2", "completed", 2),
        ("step-3", "completed", 1),
    ]
    meta_ttl, journal_ttl = system.pttls(task_id)
    assert meta_ttl > 0 and journal_ttl > 0
    system.wait_settled()


def test_a_retry_waiting_out_its_countdown_is_not_recovered_early(system: System) -> None:
    task_id, control = system.new_task_id(), system.new_task_id()
    countdown = 12.0
    # An hour of visibility timeout: the worker holds the retry as an ETA task, and
    # nothing else delivers it.
    a = system.start_worker(visibility_timeout=3600, recovery_after=RECOVERY_AFTER)
    system.send_named(harness.FLAKY, task_id, "order-c", countdown)
    wait_for(lambda: system.runs(task_id, "flaky")["flaky"] == 1, "the first attempt of flaky")
    failed_at = time.monotonic()
    waiting = system.meta(task_id)
    assert waiting["status"] == "running" and "lease" not in waiting  # released for the retry

    # A lost invocation meanwhile is recovered: the sweep runs during the countdown.
    system.start_lost(control, "order-x", 1)
    assert system.result(control).get(timeout=WAIT_TIMEOUT)["total"] == 10
    assert time.monotonic() - failed_at < countdown - 2, "the control was not recovered in time"
    assert RECOVERED.format(control) in a.log()
    assert system.meta(task_id)["status"] == "running"
    assert system.runs(task_id, "flaky")["flaky"] == 1

    result = system.result(task_id).get(timeout=WAIT_TIMEOUT)
    assert result["order"] == "order-c"
    assert system.runs(task_id, "prep-0", "prep-1", "flaky") == {
        "prep-0": 1,
        "prep-1": 1,
        "flaky": 2,
    }
    # One retry, delivered once, by Celery at its ETA; the sweep published nothing.
    assert system.counter(system.rec.bodies(task_id)) == 2
    assert system.counter(system.rec.deliveries(task_id)) == 2
    retried, done = system.wait_outcomes(task_id, 2)
    assert (retried["state"], done["state"]) == ("RETRY", "SUCCESS")
    assert RECOVERED.format(task_id) not in a.log()
    inv = system.invocation(task_id)
    assert inv.status == "completed"
    first, second = inv.steps[2].started_at, result["steps"][2]
    assert first is not None and second["run"] == 2
    assert inv.steps[2].attempts == 2
    assert len(system.outcomes(task_id)) == 2
    system.wait_settled()


def test_suspended_and_paused_invocations_are_never_recovered(system: System) -> None:
    sleeping, paused, control = system.new_task_id(), system.new_task_id(), system.new_task_id()
    a = system.start_worker(recovery_after=RECOVERY_AFTER)
    system.send_named(harness.SLEEPER, sleeping, "order-s", 600)
    system.send_named(harness.FLAKY, paused, "order-p", 0.1, 1, False, "pause")
    wait_for(lambda: system.meta(sleeping).get("status") == "suspended", "the sleeper to suspend")
    wait_for(lambda: system.meta(paused).get("status") == "paused", "the flaky step to pause")
    idle_since = time.monotonic()

    # A lost invocation created after both: once the sweep recovered it, it has looked at
    # running invocations idle for longer than durable_recovery_after.
    wait_for(lambda: time.monotonic() - idle_since > RECOVERY_AFTER, "both to wait long enough")
    system.start_lost(control, "order-x", 1)
    assert system.result(control).get(timeout=WAIT_TIMEOUT)["total"] == 10
    assert RECOVERED.format(control) in a.log()

    for task_id, status in ((sleeping, "suspended"), (paused, "paused")):
        assert RECOVERED.format(task_id) not in a.log()
        assert system.invocation(task_id).status == status
        assert system.counter(system.rec.bodies(task_id)) == 1
        assert system.counter(system.rec.deliveries(task_id)) == 1
        assert "lease" not in system.meta(task_id)
    assert system.runs(sleeping, "before", "after") == {"before": 1, "after": 0}
    assert system.runs(paused, "flaky")["flaky"] == 1
    system.wait_settled()
