"""A ``DurableTask`` on Celery's own pytest fixtures (``celery_app``, ``celery_worker``), as
a user's suite that has them already would write it: changing ``base=`` changes nothing
about how that suite runs its tasks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from celery.contrib.testing.worker import TestWorkController

from celery_durable import DurableTask, get_invocation
from celery_durable.runtime import release_runtime


@pytest.fixture
def app(celery_app: Celery) -> Iterator[Celery]:
    yield celery_app
    release_runtime(celery_app)


def test_a_durable_task_runs_on_celerys_own_worker_fixture_and_replays_its_step(
    app: Celery, celery_worker: TestWorkController
) -> None:
    charged: list[int] = []

    def charge(amount: int) -> int:
        charged.append(amount)
        return amount * 2

    @app.task(base=DurableTask, bind=True, name="fixtures.checkout")
    def checkout(self: DurableTask, amount: int) -> int:
        return int(self.ctx.run("charge", charge, amount))

    celery_worker.reload()  # as Celery's docs say: the worker learns the new task
    first = checkout.delay(21)
    assert first.get(timeout=10) == 42
    # The same task id delivered again: its recorded outcome, the step not run again.
    again = checkout.apply_async((21,), task_id=first.id)
    assert again.get(timeout=10) == 42
    assert charged == [21]
    invocation = get_invocation(app, first.id)
    assert invocation is not None
    assert (invocation.status, [step.name for step in invocation.steps]) == (
        "completed", ["charge"]
    )  # fmt: skip
