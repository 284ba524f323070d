"""Eager mode as the README describes it, with its test configuration: the
``durable_app`` fixture (``task_always_eager``, ``task_eager_propagates``, a ``memory://``
broker, journals in this process, no Redis)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from celery import Celery

from celery_durable import (
    ContextError,
    DurableTask,
    RetryPolicy,
    get_invocation,
    list_invocations,
    resolve_awakeable,
)

QUICK = RetryPolicy(max_attempts=4, initial_interval=0.01)


def test_a_step_retried_by_its_policy_replays_the_steps_before_it(durable_app: Celery) -> None:
    assert durable_app.conf.task_eager_propagates
    runs: Counter[str] = Counter()
    retries: list[int] = []

    def flaky() -> str:
        runs["flaky"] += 1
        if runs["flaky"] < 3:
            raise ConnectionError(f"down #{runs['flaky']}")
        return "up"

    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def sync(self: DurableTask) -> list[str]:
        retries.append(self.request.retries)
        first = self.ctx.run("first", lambda: runs.update(["first"]) or "one")
        return [first, self.ctx.run("flaky", flaky, retry=QUICK)]

    result = sync.delay()
    assert result.get() == ["one", "up"]
    assert runs == {"first": 1, "flaky": 3}  # the step before replayed, as on a worker
    assert retries == [0, 1, 2]  # request.retries grows, as with a worker's retries
    inv = get_invocation(durable_app, result.id)
    assert inv is not None and [s.attempts for s in inv.steps] == [1, 3]


def test_an_exhausted_step_still_raises_its_own_error(durable_app: Celery) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def down(self: DurableTask) -> None:
        self.ctx.run("connect", _refuse, retry=QUICK)

    with pytest.raises(ConnectionError, match="refused"):
        down.delay()


def _refuse() -> None:
    raise ConnectionError("refused")


def test_celerys_autoretry_of_a_step_replays_too(durable_app: Celery) -> None:
    runs: Counter[str] = Counter()

    def flaky() -> int:
        runs["flaky"] += 1
        if runs["flaky"] < 3:
            raise ConnectionError("down")
        return runs["flaky"]

    @durable_app.task(
        base=DurableTask, bind=True, shared=False, autoretry_for=(ConnectionError,),
        max_retries=5, default_retry_delay=180,
    )  # fmt: skip
    def sync(self: DurableTask) -> int:
        return int(self.ctx.run("flaky", flaky))

    assert sync.delay().get() == 3  # at once, as Celery runs eager retries: no 180 s waits


def test_an_awakeable_completed_before_the_body_waits_gives_its_value(
    durable_app: Celery,
) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def approve(self: DurableTask, order: str) -> Any:
        awakeable_id, approval = self.ctx.awakeable("approval")
        # What a test's fake mail service does: the manager answers at once.
        self.ctx.run("ask", resolve_awakeable, durable_app, awakeable_id, {"by": "ada"})
        return {"order": order, "approval": approval.result()}

    assert approve.delay("o-1").get() == {"order": "o-1", "approval": {"by": "ada"}}


def test_an_awakeable_nobody_completes_is_still_a_clear_error(durable_app: Celery) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def approve(self: DurableTask) -> Any:
        return self.ctx.awakeable("approval")[1].result()

    with pytest.raises(ContextError, match="has no worker to wake it"):
        approve.delay()


def test_get_and_list_invocations_read_eager_journals_and_no_redis(durable_app: Celery) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def double(self: DurableTask, x: int) -> int:
        return int(self.ctx.run("double", lambda: x * 2))

    first = double.delay(1)
    time.sleep(0.002)  # listings order by creation time to the ms (ties by id): a later ms
    second = double.delay(2)
    # pytest turns warnings into errors here: a "durable_redis_url is not set" would fail.
    inv = get_invocation(durable_app, second.id)
    assert inv is not None and inv.status == "completed" and inv.result == 4
    assert [i.id for i in list_invocations(durable_app)] == [second.id, first.id]
    assert [i.id for i in list_invocations(durable_app, limit=1)] == [second.id]
    assert list_invocations(durable_app, status="failed") == []
    assert get_invocation(durable_app, "no-such-id") is None


def test_a_policy_that_never_gives_up_ends_instead_of_hanging(durable_app: Celery) -> None:
    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def down(self: DurableTask) -> None:
        self.ctx.run("connect", _refuse, retry=RetryPolicy(max_attempts=None, initial_interval=0))

    with pytest.raises(RecursionError):
        down.delay()


@pytest.mark.durable_replay_each_step
def test_a_cancel_replays_where_it_was_raised_when_every_step_is_replayed(
    durable_app: Celery,
) -> None:
    from celery_durable import InvocationCancelled
    from celery_durable.runtime import runtime_for

    runs: Counter[str] = Counter()

    @durable_app.task(base=DurableTask, bind=True, shared=False)
    def saga(self: DurableTask) -> str:
        ctx, store = self.ctx, runtime_for(durable_app).eager_store
        ctx.run("reserve", runs.update, ["reserve"])
        ctx.run("cancel", lambda: store.cancel(self.request.id, "stop") and None)
        try:
            ctx.run("charge", runs.update, ["charge"])
            ctx.run("ship", runs.update, ["ship"])
        except InvocationCancelled as exc:
            ctx.run("refund", runs.update, ["refund"])
            return f"refunded: {exc.reason}"
        return "shipped"

    # Every step after the first is reached through a replay, the cancel's entry too: it
    # is raised at the same operation each time, and no step ran twice. (The execution
    # after "cancel" hears of it at its start, so "charge", the next new step, raises.)
    assert saga.delay().get() == "refunded: stop"
    assert runs == {"reserve": 1, "refund": 1}
