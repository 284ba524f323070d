"""The cluster changes under a running invocation: a master failover, slot migrations,
a master that refuses writes.

``CLUSTER FAILOVER`` on the replica of the master that holds a running invocation's
slot: a manual failover, which waits until the replica has every write of its master
before it swaps their roles, so no acknowledged write is lost and it takes a few
seconds here. A forced failover after a master's crash would need the cluster node
timeout to pass (15 s by default) and may lose the writes the replica had not yet
received (``durable_wait_replicas`` is about that); it is not what these tests are for.

The slot migrations are made by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
NODE), as ``redis-cli --cluster reshard`` makes them, but for the one slot that holds
the invocation, and stopped where the test wants: the keys all moved between two
steps, or an invocation's keys split between two masters while a step writes.

The last test makes the master of the set of slots in use refuse writes for a moment
(``min-replicas-to-write`` above its replica count) while an invocation is created.

Each test of a change holds a worker inside a step (a blocked step) while the cluster changes,
then lets it go on; the worker's visibility timeout is an hour, so nothing but the
topology change can make a step run again.
"""

from __future__ import annotations

import pytest

import celery_durable
from tests.cluster import names
from tests.cluster.test_cluster_system import STEPS, steps_of
from tests.cluster.world import World
from tests.processes import WAIT_TIMEOUT

pytestmark = pytest.mark.system


def _held_in_step_2(world: World) -> str:
    """A pipeline of four steps whose worker is inside step-2; its task id."""
    task_id = world.new_id()
    world.block(task_id, "step-2")
    world.start_worker(visibility_timeout=3600)
    world.send(names.PIPELINE, "order-t", len(STEPS), task_id=task_id)
    world.wait_entered(task_id, "step-2")
    before = world.invocation(task_id)
    assert (before.status, [s.name for s in before.steps]) == ("running", ["step-0", "step-1"])
    return task_id


def test_a_master_failover_during_a_step_loses_nothing(world: World) -> None:
    task_id = _held_in_step_2(world)
    slot = world.keys.slot(task_id)
    assert world.cluster.key_slot(world.keys.invocation(task_id).meta) == slot
    old = world.cluster.master_of_slot(slot)

    new = world.cluster.failover(old)
    assert world.cluster.master_of_slot(slot).node_id == new.node_id != old.node_id
    # The new master has the journal as the old one had it: both finished steps.
    node = world.cluster.client(new.port)
    try:
        assert node.llen(world.keys.invocation(task_id).journal) == 2
    finally:
        node.close()

    world.release(task_id, "step-2")
    result = world.result(task_id).get(timeout=WAIT_TIMEOUT)

    runs = world.runs(task_id, *STEPS)
    # Steps before the failover ran once; the one in flight at least once.
    assert (runs["step-0"], runs["step-1"], runs["step-3"]) == (1, 1, 1)
    assert 1 <= runs["step-2"] <= 2
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert inv.result == result
    assert [(s.name, s.status) for s in inv.steps] == [(name, "completed") for name in STEPS]
    assert [s.value for s in inv.steps] == result["steps"]
    assert result["steps"][2]["run"] == runs["step-2"]
    [listed] = celery_durable.list_invocations(world.app, status="completed")
    assert listed.id == task_id

    # A new invocation on the new master: its first script there (start) runs, though
    # the new master never had the scripts loaded (a replica does not get them).
    later = world.new_id(new.port)
    world.send(names.PIPELINE, "order-after", 2, task_id=later).get(timeout=WAIT_TIMEOUT)
    assert world.runs(later, "step-0", "step-1") == {"step-0": 1, "step-1": 1}
    assert world.invocation(later).status == "completed"


def test_a_slot_migrated_between_two_steps_loses_nothing(world: World) -> None:
    task_id = _held_in_step_2(world)
    slot = world.keys.slot(task_id)
    source = world.cluster.master_of_slot(slot)
    target = next(n for n in world.cluster.nodes() if n.role == "master" and n != source)

    migration = world.cluster.migrate(slot, target)
    migration.finish()
    assert world.cluster.master_of_slot(slot).node_id == target.node_id
    node = world.cluster.client(target.port)
    try:  # the journal and the slot's listing indexes moved with it
        assert node.llen(world.keys.invocation(task_id).journal) == 2
        assert node.zscore(world.keys.indexes(task_id).running, task_id) is not None
    finally:
        node.close()

    world.release(task_id, "step-2")
    result = world.result(task_id).get(timeout=WAIT_TIMEOUT)

    assert world.runs(task_id, *STEPS) == dict.fromkeys(STEPS, 1)
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert steps_of(inv) == [(i, "run", name, "completed", 1) for i, name in enumerate(STEPS)]
    assert [s.value for s in inv.steps] == result["steps"]
    [listed] = celery_durable.list_invocations(world.app, status="completed")
    assert listed.id == task_id


def test_a_step_written_while_its_invocations_keys_are_split_by_a_migration(
    world: World,
) -> None:
    """Mid-migration, an invocation's meta hash is on the target and its journal still
    on the source: every script on both is refused with TRYAGAIN until the slot is
    moved. That is an outage like any other: the write is retried until the slot has
    moved, and nothing is lost."""
    task_id = _held_in_step_2(world)
    slot = world.keys.slot(task_id)
    source = world.cluster.master_of_slot(slot)
    target = next(n for n in world.cluster.nodes() if n.role == "master" and n != source)

    migration = world.cluster.migrate(slot, target)
    migration.move(world.keys.invocation(task_id).meta)
    world.release(task_id, "step-2")
    # The step's append meets the split keys; the delivery ends, one way or another.
    [first] = world.wait_outcomes(task_id, 1)
    migration.finish()
    if first["state"] != "RETRY":
        world.wait_settled()
        inv = world.invocation(task_id)
        pytest.fail(
            f"the split slot ended the delivery for good: {first['state']} "
            f"({first.get('type')}: {first.get('message')}). The journal says "
            f"{inv.status!r} with steps {[s.name for s in inv.steps]}, and the message was "
            f"acked (unacked: {world.unacked()}, queued: {world.queued()}): nothing will "
            "deliver it again."
        )

    result = world.result(task_id).get(timeout=WAIT_TIMEOUT)
    runs = world.runs(task_id, *STEPS)
    assert (runs["step-0"], runs["step-1"], runs["step-3"]) == (1, 1, 1)
    assert 1 <= runs["step-2"] <= 2
    inv = world.invocation(task_id)
    assert inv.status == "completed"
    assert [(s.name, s.status) for s in inv.steps] == [(name, "completed") for name in STEPS]
    assert [s.value for s in inv.steps] == result["steps"]


def test_an_invocation_created_while_the_slots_set_refuses_writes_is_listed(
    world: World,
) -> None:
    """An invocation's slot is added to the set of slots in use (which listings read)
    outside the start script. If that write fails (its master refuses writes for a
    moment), the start is an outage and the task is retried; the invocation exists by
    then, and must still reach the listings."""
    slots_master = world.cluster.master_of_slot(world.cluster.key_slot(world.keys.slots_in_use))
    others = [n.port for n in world.cluster.nodes() if n.role == "master" and n != slots_master]
    world.start_worker()
    # A first invocation: the worker has marked the data set's epoch and noted a slot.
    warm_up = world.new_id(others[0])
    world.send(names.PIPELINE, "order-w", 1, task_id=warm_up).get(timeout=WAIT_TIMEOUT)
    task_id = world.new_id(others[1])
    assert world.keys.slot(task_id) != world.keys.slot(warm_up)

    refuse = world.cluster.client(slots_master.port)
    try:
        # More replicas than it has: the master refuses every write (NOREPLICAS).
        refuse.config_set("min-replicas-to-write", 3)
        world.send(names.PIPELINE, "order-s", 2, task_id=task_id)
        [first] = world.wait_outcomes(task_id, 1)
    finally:
        refuse.config_set("min-replicas-to-write", 0)
        refuse.close()
    assert first["state"] == "RETRY", first
    assert "NOREPLICAS" in first["message"]

    result = world.result(task_id).get(timeout=WAIT_TIMEOUT)
    assert world.runs(task_id, "step-0", "step-1") == {"step-0": 1, "step-1": 1}
    assert result["steps"][0]["run"] == 1
    assert world.invocation(task_id).status == "completed"
    listed = [inv.id for inv in celery_durable.list_invocations(world.app)]
    assert sorted(listed) == sorted([warm_up, task_id]), "an invocation is missing from ls"
