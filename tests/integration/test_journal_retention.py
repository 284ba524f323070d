"""``durable_journal_retention`` with a real worker: a finished invocation whose steps
were dropped still completes exactly once. The same task id sent again returns the
recorded outcome (or raises the recorded error) and runs neither the body nor a step;
``show``, its JSON and the API say the steps were dropped; resume and restart refuse,
saying why."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner

from celery_durable import (
    DurableTask,
    InvocationStateError,
    get_invocation,
    restart_invocation,
    resume_invocation,
)
from celery_durable.cli import durable

TIMEOUT = 30


def define(app: Celery, journal_retention: float) -> tuple[Any, list[str]]:
    """A task that records, in a list, every body run and every step it runs."""
    ran: list[str] = []

    @app.task(
        base=DurableTask, bind=True, shared=False, durable_journal_retention=journal_retention
    )
    def order(self: DurableTask, n: int) -> int:
        ran.append("body")

        def step(i: int) -> int:
            ran.append(f"step {i}")
            if n < 0:
                raise KeyError("no such order")
            return i * n

        return sum(self.ctx.run(f"s{i}", step, i) for i in range(3))

    return order, ran


def send_again(task: Any, task_id: str, *args: Any) -> Any:
    """Deliver ``task_id`` once more, after dropping Celery's stored result of the first
    delivery, so that the value read is the second delivery's."""
    task.AsyncResult(task_id).forget()
    return task.apply_async(args, task_id=task_id)


def keys_of(client: redis.Redis, prefix: str, task_id: str) -> list[str]:
    return sorted(k.rpartition(":")[2] for k in client.scan_iter(f"{prefix}:{{{task_id}}}:*"))


def test_a_redelivery_after_the_steps_were_dropped_runs_nothing(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    order, ran = define(app, 0)
    with worker():
        first = order.apply_async((5,))
        assert first.get(timeout=TIMEOUT) == 15
        assert ran == ["body", "step 0", "step 1", "step 2"]
        assert keys_of(redis_client, key_prefix, first.id) == ["meta"]  # the outcome only

        again = send_again(order, first.id, 5)
        assert again.get(timeout=TIMEOUT) == 15
        assert ran == ["body", "step 0", "step 1", "step 2"], "the body ran again"

    inv = get_invocation(app, first.id)
    assert inv is not None
    assert (inv.status, inv.result, inv.steps, inv.steps_dropped) == ("completed", 15, [], True)


def test_a_redelivery_after_the_journal_retention_ran_out_runs_nothing(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    order, ran = define(app, 1.0)
    with worker():
        first = order.apply_async((2,))
        assert first.get(timeout=TIMEOUT) == 6
        kept = get_invocation(app, first.id)
        assert kept is not None
        assert (len(kept.steps), kept.steps_dropped) == (3, False)
        time.sleep(1.2)
        assert keys_of(redis_client, key_prefix, first.id) == ["meta"]

        again = send_again(order, first.id, 2)
        assert again.get(timeout=TIMEOUT) == 6
        assert ran.count("body") == 1


def test_a_failure_whose_steps_were_dropped_is_raised_again_and_not_resumed(
    app: Celery, worker: Any
) -> None:
    order, ran = define(app, 0)
    with worker():
        first = order.apply_async((-1,))
        with pytest.raises(KeyError, match="no such order"):
            first.get(timeout=TIMEOUT)
        again = send_again(order, first.id, -1)
        with pytest.raises(KeyError, match="no such order"):
            again.get(timeout=TIMEOUT)
    assert ran == ["body", "step 0"]

    with pytest.raises(InvocationStateError, match="durable_journal_retention"):
        resume_invocation(app, first.id)
    with pytest.raises(InvocationStateError, match="durable_journal_retention"):
        restart_invocation(app, first.id, 0)
    inv = get_invocation(app, first.id)
    assert inv is not None
    assert inv.status == "failed"  # nothing changed


def test_show_says_the_steps_were_dropped(app: Celery, worker: Any) -> None:
    order, _ = define(app, 0)
    with worker():
        task_id = order.apply_async((1,)).id
        order.AsyncResult(task_id).get(timeout=TIMEOUT)

    def show(*args: str) -> str:
        context = CLIContext(app=app, no_color=True, workdir=None)
        result = CliRunner().invoke(durable, ["show", *args, task_id], obj=context)
        assert result.exit_code == 0, result.output
        return result.output

    text = show()
    assert "steps: dropped after journal retention" in text
    assert "no journal entries" not in text
    document = json.loads(show("--json"))
    assert (document["steps"], document["steps_dropped"]) == ([], True)
    assert document["steps_until"] is not None
    assert document["result"] == 3
