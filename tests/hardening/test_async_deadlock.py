"""``ctx.all(ctx.run_async(...), ctx.run_async(...))`` on a real prefork worker never hangs."""

from __future__ import annotations

import pytest

from tests.hardening import harness
from tests.hardening.world import World
from tests.processes import wait_for

pytestmark = pytest.mark.system

#: Invocations sent at once: each is the README's two-run_async case.
INVOCATIONS = 50
#: Far longer than 50 of them take on a busy machine, far shorter than a hang.
DEADLINE = 90.0


def test_all_of_two_async_steps_never_hangs_on_a_prefork_worker(world: World) -> None:
    world.start_worker(pool="prefork", concurrency=2)
    sent = {world.new_id(): n for n in range(INVOCATIONS)}
    for task_id, n in sent.items():
        world.send(harness.BOTH, n, task_id=task_id)

    def finished() -> bool:
        return all(
            (inv := world.invocation(task_id)) is not None and inv.status == "completed"
            for task_id in sent
        )

    wait_for(finished, f"{INVOCATIONS} invocations to complete", DEADLINE, interval=0.5)
    for task_id, n in sent.items():
        inv = world.invocation(task_id)
        assert inv is not None
        assert inv.result == [n, n + 1]
        assert [step.name for step in inv.steps] == ["a", "b", "all"]
