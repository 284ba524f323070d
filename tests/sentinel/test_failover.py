"""A Sentinel failover while an invocation runs, with its journal on ``sentinel://``.

The failover is forced by SIGKILLing the primary, not by ``SENTINEL FAILOVER``. A
manual failover leaves the old primary up and taking writes until the sentinel turns
it into a replica, ``4 x SENTINEL_PUBLISH_PERIOD`` later (about 10 s here), and a client
that holds a connection to it (redis-py's Sentinel pool re-asks the sentinel only when
it connects) goes on writing there meanwhile: those writes are lost when it is turned.
That is a split brain, which the durability levels answer (see docs/reliability.md),
not the failover these tests are about. A killed primary takes no more writes: every
client must go through the sentinel to find the new one, at a moment the test chooses.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from celery.result import AsyncResult

from tests.processes import wait_for
from tests.sentinel.servers import client_of, resume
from tests.sentinel.world import SentinelWorld

pytestmark = pytest.mark.system

N_STEPS = 4
IN_FLIGHT = 2


def expected_result(world: SentinelWorld, task_id: str) -> dict[str, Any]:
    """The result, built from the journal's step values as the body builds it, once the
    journal holds every step (each value's token differs from run to run)."""
    values = [step.value for step in world.invocation(task_id).steps]
    assert [(v["index"], v["amount"]) for v in values] == [
        (i, 10 * (i + 1)) for i in range(len(values))
    ], values
    return {
        "order": f"order-{task_id}",
        "steps": values,
        "total": sum(v["amount"] for v in values),
    }


def assert_nothing_reported_was_lost(world: SentinelWorld, task_id: str) -> None:
    """Every value ``ctx.run`` handed to the body, in any execution, is the one in the
    final journal: no step reported done was lost and run again with another outcome."""
    journaled = {step.index: step.value["token"] for step in world.invocation(task_id).steps}
    for seen in world.reported(task_id):
        assert journaled[seen["step"]] == seen["token"], (
            f"step-{seen['step']} was handed to the body of execution {seen['execution']} "
            f"with token {seen['token']}, but the journal holds {journaled[seen['step']]}: a "
            f"step reported done was lost in the failover and ran again; runs by step: "
            f"{world.runs(task_id)}, reported: {world.reported(task_id)}"
        )


def test_a_failover_mid_step_keeps_the_steps_before_it(world: SentinelWorld) -> None:
    trio = world.trio
    world.start_worker()
    system = world.system
    task_id = system.new_task_id()
    system.block(task_id, f"step-{IN_FLIGHT}")
    result = world.send(task_id, N_STEPS)
    world.wait_journal_on_primary(task_id)
    system.wait_entered(task_id, f"step-{IN_FLIGHT}")
    assert world.journal_length(trio.primary, task_id) == IN_FLIGHT

    # The default level: a step counts once the primary has it, and the replica gets it
    # asynchronously, within milliseconds here. The steps before the failover are the
    # ones the replica received; check that it did, rather than assume it.
    trio.wait_caught_up()
    assert world.journal_length(trio.replica, task_id) == IN_FLIGHT

    trio.primary.kill()
    killed_at = time.monotonic()
    # The step in flight ends during the failover: its write meets a primary that is
    # gone, and the sentinel may still name it.
    system.release(task_id, f"step-{IN_FLIGHT}", 1)
    trio.wait_failover_to(trio.replica)
    failover_took = time.monotonic() - killed_at

    assert result.get(timeout=90) == expected_result(world, task_id)
    invocation = world.invocation(task_id)
    assert invocation.status == "completed"
    assert [s.name for s in invocation.steps] == [f"step-{i}" for i in range(N_STEPS)]
    runs = world.runs(task_id)
    # Steps before the failover are not run again; the one in flight is at least once.
    assert runs[0] == runs[1] == 1, runs
    assert runs[IN_FLIGHT] in (1, 2), runs
    assert runs[3] == 1, runs
    assert_nothing_reported_was_lost(world, task_id)
    print(
        f"\nfailover in {failover_took:.1f} s; runs by step {runs}; "
        f"{world.executions(task_id)} executions"
    )


def test_with_wait_replicas_no_step_reported_done_is_lost(world: SentinelWorld) -> None:
    """``durable_wait_replicas = 1``: a step is reported done only once the replica has
    it. The replica is then cut off (stopped, its link closed) while the primary goes on
    taking writes (a marker key, the lease renewals), so the primary's last writes are
    certainly not on the replica when the primary dies: a failover that loses data. None
    of the steps reported before it is lost."""
    trio = world.trio
    world.start_worker(wait_replicas=1, wait_timeout=1.0)
    system = world.system
    task_id = system.new_task_id()
    system.block(task_id, f"step-{IN_FLIGHT}")
    result = world.send(task_id, N_STEPS)
    world.wait_journal_on_primary(task_id)
    system.wait_entered(task_id, f"step-{IN_FLIGHT}")
    # No waiting for the replica here: WAIT made ctx.run return only once it had them.
    assert world.journal_length(trio.replica, task_id) == IN_FLIGHT
    reported_before = world.reported(task_id)
    assert [seen["step"] for seen in reported_before] == list(range(IN_FLIGHT))

    trio.cut_off_replica()
    meta_key = system.journal_keys(task_id).meta
    with client_of(trio.primary) as primary:
        primary.set(f"{system.prefix}:unreplicated", 1)
        lease_before = int(primary.hget(meta_key, "lease_until") or 0)
        wait_for(
            lambda: int(primary.hget(meta_key, "lease_until") or 0) > lease_before,
            "a lease renewal the replica does not get",
        )
    trio.primary.kill()
    resume(trio.replica)
    trio.wait_failover_to(trio.replica)
    with client_of(trio.replica) as new_primary:
        # The old primary's last writes are lost: this failover is one that loses data.
        assert not new_primary.exists(f"{system.prefix}:unreplicated")
    # WAIT needs a replica to answer: the old primary's machine comes back as one.
    trio.restart_as_replica(trio.primary, of=trio.replica)

    system.release(task_id, f"step-{IN_FLIGHT}", 1)
    assert result.get(timeout=90) == expected_result(world, task_id)
    assert world.invocation(task_id).status == "completed"
    runs = world.runs(task_id)
    assert runs[0] == runs[1] == 1, runs
    assert runs[IN_FLIGHT] in (1, 2), runs
    assert_nothing_reported_was_lost(world, task_id)
    print(f"\nruns by step {runs}; {world.executions(task_id)} executions")


def wait_result_or_ignored(world: SentinelWorld, task_id: str, result: AsyncResult) -> Any:
    """The task's result; fail at once if a delivery was ignored (acknowledged with no
    outcome) while the invocation is still unfinished: nothing would deliver it again."""

    def ended() -> tuple[str, Any] | None:
        if result.ready():
            return ("result", result.get(timeout=5))
        for outcome in world.system.outcomes(task_id):
            if outcome["state"] == "IGNORED":
                return ("ignored", outcome)
        return None

    how, what = wait_for(ended, f"{task_id} to finish", 90)
    if how == "ignored":
        status = world.invocation(task_id).status
        raise AssertionError(
            f"a delivery of {task_id} was acknowledged as IGNORED ({what.get('message')}) "
            f"while the journal on the new primary says {status!r}: no message is left to "
            f"deliver it again. Runs by step {world.runs(task_id)}, values handed to the "
            f"body {world.reported(task_id)}"
        )
    return what


def test_with_wait_replicas_a_replay_hands_back_only_steps_a_replica_has(
    world: SentinelWorld,
) -> None:
    """``durable_wait_replicas = 1`` promises that ``ctx.run`` returns only once a replica
    has the step ("flush before return", docs/architecture.md §4), on the first run and on replays.

    The step in flight ends while the replica is cut off: its write is on the primary
    alone, WAIT times out, and the task is retried through the outage path, as it should
    be. The retry starts on the same primary (a start sends no WAIT) and its replay hands
    that entry, which no replica acknowledged, back to the body, which goes on to the next
    step. The primary then dies: the entry is lost with it, and the step that the body
    was told was done runs again with another outcome.
    """
    trio = world.trio
    world.start_worker(wait_replicas=1, wait_timeout=1.0)
    system = world.system
    task_id = system.new_task_id()
    system.block(task_id, f"step-{IN_FLIGHT}")
    system.block(task_id, f"step-{IN_FLIGHT + 1}")
    result = world.send(task_id, N_STEPS)
    world.wait_journal_on_primary(task_id)
    system.wait_entered(task_id, f"step-{IN_FLIGHT}")
    assert world.journal_length(trio.replica, task_id) == IN_FLIGHT

    trio.cut_off_replica()
    system.release(task_id, f"step-{IN_FLIGHT}", 1)
    # Its write is not acknowledged: the execution ends, and the retry (1 s later) runs a
    # second one. Give that one the time to replay, and to reach the next step if its
    # replay hands the unacknowledged entry back.
    after = f"step-{IN_FLIGHT + 1}"
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not system.runs(task_id, after)[after]:
        time.sleep(0.1)
    on_primary_only = world.journal_length(trio.primary, task_id)

    trio.primary.kill()
    resume(trio.replica)
    trio.wait_failover_to(trio.replica)
    trio.restart_as_replica(trio.primary, of=trio.replica)
    system.release(task_id, f"step-{IN_FLIGHT + 1}", 1)

    value = wait_result_or_ignored(world, task_id, result)
    assert value == expected_result(world, task_id)
    assert world.invocation(task_id).status == "completed"
    runs = world.runs(task_id)
    print(
        f"\nthe primary alone had {on_primary_only} entries; runs by step {runs}; "
        f"{world.executions(task_id)} executions; handed to the body: {world.reported(task_id)}"
    )
    assert runs[0] == runs[1] == 1, runs
    assert_nothing_reported_was_lost(world, task_id)


def test_an_execution_whose_fence_the_failover_lost_does_not_strand_the_invocation(
    world: SentinelWorld,
) -> None:
    """At the default level a failover may lose the primary's last writes, and with them
    the fence an execution took at its start. That execution's next write finds an older
    fence: the journal went back in time, nobody else took the invocation. The steps it
    wrote may run again (at least once), but the invocation must go on: a later delivery
    replays what the new primary holds and finishes it.

    A prefork child dies in a step (its parent gives the message back at once), while the
    replica is cut off; the execution that takes over starts on the primary alone, and
    the primary dies. A long visibility timeout, as in production, keeps the Redis
    broker from handing out a spare copy of the message meanwhile.
    """
    trio = world.trio
    world.start_worker(pool="prefork", visibility_timeout=120.0)
    system = world.system
    task_id = system.new_task_id()
    system.block(task_id, "step-1")
    result = world.send(task_id, 3)
    world.wait_journal_on_primary(task_id)
    first = system.wait_entered(task_id, "step-1")
    trio.wait_caught_up()  # step-0 and the first execution's fence are on the replica

    trio.cut_off_replica()
    system.block(task_id, "step-1")  # the next run waits too
    os.kill(first, signal.SIGKILL)
    system.wait_entered(task_id, "step-1", times=2)
    with client_of(trio.primary) as primary:
        on_primary = int(primary.hget(system.journal_keys(task_id).meta, "fence") or 0)

    trio.primary.kill()
    resume(trio.replica)
    trio.wait_failover_to(trio.replica)
    with client_of(trio.replica) as new_primary:
        kept = int(new_primary.hget(system.journal_keys(task_id).meta, "fence") or 0)
    assert kept < on_primary, (kept, on_primary)  # the failover lost the second fence
    system.release(task_id, "step-1", 2)

    value = wait_result_or_ignored(world, task_id, result)
    assert value == expected_result(world, task_id)
    assert world.invocation(task_id).status == "completed"
    assert world.runs(task_id)[0] == 1
