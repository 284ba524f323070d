"""A completed invocation's steps packed into one key, with a real worker: what people
and operators read is the same journal (``show``, its JSON, the API, the listing), a
redelivery runs nothing, and a restart forks from the packed steps and runs only the
steps after its start."""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner

from celery_durable import DurableTask, get_invocation, restart_invocation
from celery_durable.cli import durable
from celery_durable.runtime import runtime_for
from tests.integration.test_journal_retention import keys_of, send_again

TIMEOUT = 30
STEPS = 10


def define(app: Celery) -> tuple[Any, list[str]]:
    """A ten-step task that records every body run and every step it runs."""
    ran: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def order(self: DurableTask, n: int) -> int:
        ran.append("body")

        def step(i: int) -> int:
            ran.append(f"step {i}")
            return i * n

        return sum(self.ctx.run(f"s{i}", step, i) for i in range(STEPS))

    return order, ran


def test_a_completed_invocation_is_read_from_its_packed_steps(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    order, ran = define(app)
    with worker():
        first = order.apply_async((2,))
        assert first.get(timeout=TIMEOUT) == 90
        assert keys_of(redis_client, key_prefix, first.id) == ["meta", "steps"]
        again = send_again(order, first.id, 2)
        assert again.get(timeout=TIMEOUT) == 90
    assert ran.count("body") == 1, "the body ran again"

    inv = get_invocation(app, first.id)
    assert inv is not None
    assert (inv.status, inv.result, inv.steps_dropped) == ("completed", 90, False)
    assert [(step.name, step.value) for step in inv.steps] == [
        (f"s{i}", i * 2) for i in range(STEPS)
    ]
    summary = runtime_for(app).store.summaries([first.id])[0]
    assert summary is not None and summary[1] == STEPS

    def show(*args: str) -> str:
        context = CLIContext(app=app, no_color=True, workdir=None)
        result = CliRunner().invoke(durable, ["show", *args, first.id], obj=context)
        assert result.exit_code == 0, result.output
        return result.output

    text = show()
    assert "s9" in text and "dropped" not in text
    document = json.loads(show("--json"))
    assert [step["value"] for step in document["steps"]] == [i * 2 for i in range(STEPS)]
    assert document["steps_dropped"] is False


def test_a_restart_forks_from_the_packed_steps(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    order, ran = define(app)
    with worker():
        first = order.apply_async((3,))
        assert first.get(timeout=TIMEOUT) == 135
        assert "steps" in keys_of(redis_client, key_prefix, first.id)
        ran.clear()
        fork_id = restart_invocation(app, first.id, 7)
        assert order.AsyncResult(fork_id).get(timeout=TIMEOUT) == 135
    # Entries before step 7 replayed from the copy; 7, 8 and 9 ran again.
    assert ran == ["body", "step 7", "step 8", "step 9"]
    fork = get_invocation(app, fork_id)
    assert fork is not None
    assert [step.value for step in fork.steps] == [i * 3 for i in range(STEPS)]
    original = get_invocation(app, first.id)
    assert original is not None
    assert (original.status, len(original.steps)) == ("completed", STEPS)  # left as it is
