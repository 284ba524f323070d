"""Where DurableTask differs from a plain Celery task on purpose (the README's
"Differences from a plain Celery task").

Each test runs the plain variant too, to show that the difference is real, and asserts
the durable behaviour:

1. A finished task id sent again with the same arguments returns the recorded result
   without running the body again; a plain task runs again (§2.7).
2. ``self.retry()`` replays the steps before the one it follows, so such a step runs
   once in all; a plain task runs everything before the retry again (§2.5).
3. ``acks_late`` is on for DurableTask: the message stays unacknowledged while the body
   runs (§1).
4. A step's value is the decoded stored one on the first run too: a tuple is a list in
   the body (§2.3).
5. ``self.retry()`` after a step (a caught failure, a poll) runs that step again, as a
   plain task does, while the steps before it run once.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from celery_durable import get_invocation
from tests.compat.harness import VARIANTS, typed
from tests.compat.world import Run, World
from tests.processes import wait_for

pytestmark = pytest.mark.compat

TIMEOUT = 15.0


def _runs(world: World) -> dict[str, Run]:
    return {variant: world.run(variant) for variant in VARIANTS}


def test_a_finished_task_id_sent_again_returns_the_recorded_result(world: World) -> None:
    runs = _runs(world)
    ids = {variant: f"again-{variant}-{uuid.uuid4().hex[:8]}" for variant in VARIANTS}
    first: dict[str, Any] = {}
    for variant, r in runs.items():
        first[variant] = r.s("counted", 7).apply_async(task_id=ids[variant])
    first = {variant: result.get(timeout=TIMEOUT) for variant, result in first.items()}
    for variant, r in runs.items():
        wait_for(lambda r=r: len(r.postruns()) >= 1, f"{variant}: the first delivery", TIMEOUT)
        r.s("counted", 7).apply_async(task_id=ids[variant])
    second = {}
    for variant, r in runs.items():
        wait_for(lambda r=r: len(r.postruns()) >= 2, f"{variant}: the second delivery", TIMEOUT)
        # Read the backend, not the client's cache of the first result.
        second[variant] = world.app.backend.get_task_meta(ids[variant], cache=False)["result"]
    successes = {
        variant: [s["result"] for s in r.signals() if s["signal"] == "success"]
        for variant, r in runs.items()
    }

    assert [p["state"] for p in runs["plain"].postruns()] == ["SUCCESS", "SUCCESS"]
    assert runs["plain"].runs("work") == 2, "a plain task runs again for the same id"
    assert first["plain"] == {"x": 7, "run": 1}
    # Celery never overwrites a stored success: the second run shows in its side effects
    # and in task_success only.
    assert second["plain"] == {"x": 7, "run": 1}
    assert successes["plain"] == [typed({"x": 7, "run": 1}), typed({"x": 7, "run": 2})]

    assert [p["state"] for p in runs["durable"].postruns()] == ["SUCCESS", "SUCCESS"]
    assert runs["durable"].runs("work") == 1, "the durable body ran again"
    assert first["durable"] == second["durable"] == {"x": 7, "run": 1}
    assert successes["durable"] == [typed({"x": 7, "run": 1})] * 2


def test_the_steps_before_the_one_self_retry_follows_run_once(world: World) -> None:
    runs = _runs(world)
    results = {variant: r.s("step_then_retry").apply_async() for variant, r in runs.items()}
    got = {variant: result.get(timeout=TIMEOUT) for variant, result in results.items()}

    assert got["plain"] == {"first": 2, "before": 2, "after": 1, "retries": 1}
    assert runs["plain"].runs("first") == 2

    # "before", the step the retry follows, runs again (item 5); "first" replays.
    assert got["durable"] == {"first": 1, "before": 2, "after": 1, "retries": 1}
    assert runs["durable"].runs("first") == 1
    assert runs["durable"].runs("after") == 1


def test_acks_late_is_on_for_durable_tasks(world: World) -> None:
    runs = _runs(world)
    results = {variant: r.s("acked_yet").apply_async() for variant, r in runs.items()}
    got = {variant: result.get(timeout=TIMEOUT) for variant, result in results.items()}

    assert got["plain"] == {"acked_while_running": True}
    assert got["durable"] == {"acked_while_running": False}


def test_a_tuple_from_a_step_is_a_list_in_the_body(world: World) -> None:
    runs = _runs(world)
    results = {variant: r.s("make_value", "tuple").apply_async() for variant, r in runs.items()}
    got = {variant: result.get(timeout=TIMEOUT) for variant, result in results.items()}

    # [step value, its type as the body saw it, the value made in the body]
    assert got["plain"] == [[1, "two", 3.0], "tuple", [1, "two", 3.0]]
    assert got["durable"] == [[1, "two", 3.0], "list", [1, "two", 3.0]]


@pytest.mark.parametrize(
    ("name", "args", "before", "again", "value"),
    [
        ("fetch_retrying", (1,), "prepare", "fetch", "fetched on attempt 2"),
        ("poll", (3,), "submit", "check", "done"),
    ],
)
def test_a_retry_after_a_step_runs_it_again_and_the_steps_before_it_once(
    world: World, name: str, args: tuple[int], before: str, again: str, value: str
) -> None:
    runs = _runs(world)
    results = {variant: r.s(name, *args).apply_async() for variant, r in runs.items()}
    got = {variant: result.get(timeout=TIMEOUT) for variant, result in results.items()}
    ran = {variant: (r.runs(before), r.runs(again)) for variant, r in runs.items()}

    assert got == {"plain": value, "durable": value}
    retries = {"fetch": 1, "check": 2}[again]
    assert ran["plain"] == (1 + retries, 1 + retries)  # the whole body, every time
    assert ran["durable"] == (1, 1 + retries)  # the step before it replays
    inv = get_invocation(world.app, results["durable"].id)
    assert inv is not None
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        (before, "completed", 1),
        (again, "completed", 1 + retries),  # the re-opened step's runs are its attempts
    ]
