"""A child's outcome cannot be forged by publishing ``celery_durable.child_outcome``."""

from __future__ import annotations

import re

import pytest

from celery_durable.keys import MetaField
from tests.hardening import harness
from tests.hardening.world import World
from tests.processes import wait_for

pytestmark = pytest.mark.system

TIMEOUT = 60
FORGED = '{"s":"ok","v":"forged","t":1.0}'
HANDLED = re.compile(r"Task celery_durable\.child_outcome\[[^\]]+\] (succeeded|raised)")


def test_a_forged_child_outcome_does_not_complete_the_parent(world: World) -> None:
    worker = world.start_worker()
    parent = world.new_id()
    world.send(harness.PARENT, task_id=parent)
    world.wait_status(parent, "suspended")  # its child waits in a queue nobody consumes
    child = f"{parent}/0"  # a child's id is its parent's and its journal index: guessable

    # The attacker publishes to the broker: the guessed child, with no token, a guessed
    # one, the child's id as the token, and with something that is not an outcome.
    forgeries = [
        (parent, 0, FORGED),
        (parent, 0, FORGED, "0" * 32),
        (parent, 0, FORGED, child),
        (parent, 0, "not json"),
        (parent, 0, "not json", "0" * 32),
    ]
    for args in forgeries:
        world.app.send_task("celery_durable.child_outcome", args=list(args))

    def all_handled() -> bool:
        return len(HANDLED.findall(worker.log())) >= len(forgeries)

    wait_for(all_handled, "the worker to take every forged outcome", TIMEOUT)
    inv = world.invocation(parent)
    assert inv is not None and (inv.status, inv.result) == ("suspended", None)
    log = worker.log()
    assert log.count("was not recorded") + log.count("that is not one") == len(forgeries)
    assert world.journal.hgetall(world.invocation_keys(parent).done) == {"0:sent": "1"}
    assert world.journal.hget(world.invocation_keys(parent).meta, MetaField.OUTCOME) is None
    shown = world.cli("show", parent)
    assert shown.returncode == 0, shown.stderr

    # The real child, once a worker takes it, completes its parent: its message carries
    # the token.
    world.start_worker(queues=(harness.nobody_queue(world.queue),))
    done = world.wait_status(parent, "completed")
    assert done.result == "the real child's value"
