"""Flow control with an in-thread worker on the real Redis: cancels (graceful, killed, by
filter, of children), deadlines, concurrency keys."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from celery import Celery

from celery_durable import (
    DurableTask,
    InvocationCancelled,
    InvocationStateError,
    RetryPolicy,
    TerminalError,
    cancel_invocation,
    cancel_invocations,
    concurrency_slots,
    get_invocation,
)
from celery_durable.errors import ConfigurationError
from tests.processes import wait_for

TIMEOUT = 30


def status(app: Celery, task_id: str, wanted: str) -> Any:
    inv = get_invocation(app, task_id)
    return inv if inv is not None and inv.status == wanted else None


def kinds(app: Celery, task_id: str) -> list[tuple[str, str, str]]:
    inv = get_invocation(app, task_id)
    assert inv is not None
    return [(s.kind, s.name, s.status) for s in inv.steps]


def make_saga(app: Celery, runs: Counter[str], errors: list[str]) -> Any:
    @app.task(shared=False, name="flow.errback")
    def errback(request: Any, exc: BaseException, traceback: Any) -> None:
        errors.append(type(exc).__name__)

    @app.task(base=DurableTask, bind=True, shared=False, name="flow.saga")
    def saga(self: DurableTask, nap: float) -> str:
        ctx = self.ctx
        try:
            ctx.run("reserve", runs.update, ["reserve"])
            ctx.sleep(nap, "wait")
            ctx.run("charge", runs.update, ["charge"])
        except TerminalError:
            ctx.run("release", runs.update, ["release"])
            raise
        return "done"

    saga.errback = errback
    return saga


def test_a_sleeping_saga_cancelled_compensates_once_and_ends_cancelled(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()
    errors: list[str] = []
    saga = make_saga(app, runs, errors)
    with worker():
        result = saga.apply_async((3600,), link_error=saga.errback.s())
        wait_for(lambda: status(app, result.id, "suspended"), "the saga to sleep")
        began = time.monotonic()
        done = cancel_invocation(app, result.id, reason="the customer left")
        assert (done.previous_status, done.killed, done.already) == ("suspended", False, False)
        with pytest.raises(InvocationCancelled, match="the customer left"):
            result.get(timeout=TIMEOUT)
        took = time.monotonic() - began
        wait_for(lambda: errors, "link_error to fire")
    assert took < 5, f"an hour's sleep cancelled in {took:.1f} s"
    assert runs == {"reserve": 1, "release": 1}
    assert errors == ["InvocationCancelled"]
    inv = get_invocation(app, result.id)
    assert inv is not None and inv.status == "cancelled"
    assert inv.cancel_reason == "the customer left"
    assert inv.error is not None and inv.error["type"] == "InvocationCancelled"
    assert kinds(app, result.id) == [
        ("run", "reserve", "completed"),
        ("sleep", "wait", "waiting"),
        ("cancel", "cancel", "cancelled"),
        ("run", "release", "completed"),
    ]
    with pytest.raises(InvocationStateError, match="it has finished"):
        cancel_invocation(app, result.id)


def test_a_killed_invocation_runs_nothing_more(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()
    saga = make_saga(app, runs, [])
    with worker():
        result = saga.delay(3600)
        wait_for(lambda: status(app, result.id, "suspended"), "the saga to sleep")
        done = cancel_invocation(app, result.id, reason="wrong order", kill=True)
        assert (done.previous_status, done.killed) == ("suspended", True)
        with pytest.raises(InvocationCancelled, match="wrong order"):
            result.get(timeout=TIMEOUT)
        time.sleep(0.5)  # a delivery (none is due) would run the body by now
    assert runs == {"reserve": 1}
    inv = get_invocation(app, result.id)
    assert inv is not None and inv.status == "cancelled"
    assert [s.kind for s in inv.steps] == ["run", "sleep"]


def test_a_paused_invocation_cancelled_runs_its_compensation(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    def flaky() -> None:
        raise ConnectionError("the bank is down")

    @app.task(base=DurableTask, bind=True, shared=False)
    def pay(self: DurableTask) -> str:
        ctx = self.ctx
        ctx.run("reserve", runs.update, ["reserve"])
        try:
            policy = RetryPolicy(max_attempts=1, retry_on=(ConnectionError,), on_exhausted="pause")
            ctx.run("charge", flaky, retry=policy)
        except TerminalError:
            ctx.run("release", runs.update, ["release"])
            return "released"
        return "paid"

    with worker():
        result = pay.delay()
        wait_for(lambda: status(app, result.id, "paused"), "the step to pause it")
        assert cancel_invocation(app, result.id).previous_status == "paused"
        assert result.get(timeout=TIMEOUT) == "released"  # it caught the cancel: completed
    assert runs == {"reserve": 1, "release": 1}
    assert kinds(app, result.id)[1:] == [
        ("cancel", "cancel", "cancelled"),
        ("run", "release", "completed"),
    ]


def test_a_cancelled_parent_cancels_its_suspended_child_whose_cancel_it_sees(
    app: Celery, worker: Any
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False, name="flow.child")
    def child(self: DurableTask) -> str:
        self.ctx.sleep(3600, "nap")
        return "child done"

    bodies: list[float] = []

    @app.task(base=DurableTask, bind=True, shared=False, name="flow.parent")
    def parent(self: DurableTask) -> dict[str, Any]:
        bodies.append(time.time())
        future = self.ctx.call(child.s())
        try:
            return {"child": future.result()}
        except InvocationCancelled as own:
            try:  # the child is cancelled too: wait for how it ended
                future.result()
            except InvocationCancelled as theirs:
                return {"own": own.reason, "child": theirs.reason}
            raise

    with worker():
        result = parent.delay()
        child_id = f"{result.id}/0"
        wait_for(lambda: status(app, child_id, "suspended"), "the child to sleep")
        wait_for(lambda: status(app, result.id, "suspended"), "the parent to wait")
        done = cancel_invocation(app, result.id, reason="stop all")
        assert done.children == [child_id]
        value = result.get(timeout=TIMEOUT)
    assert value == {"own": "stop all", "child": f"its parent {result.id} was cancelled: stop all"}
    assert status(app, child_id, "cancelled") is not None
    # Its first execution, the one the cancel woke (its compensation waits for the child,
    # suspended, not woken again and again by the cancel it raised), the child's outcome's.
    assert len(bodies) == 3


def test_a_cancel_during_a_failing_step_does_not_wait_for_its_retry(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def polls(self: DurableTask) -> str:
        def fail_once_cancelled() -> None:
            runs.update(["attempt"])
            cancel_invocation(app, self.request.id, reason="stop polling")
            raise ConnectionError("not yet")

        try:
            policy = RetryPolicy(max_attempts=10, initial_interval=3600)
            self.ctx.run("poll", fail_once_cancelled, retry=policy)
        except InvocationCancelled:
            return "stopped"
        return "polled"

    with worker():
        assert polls.delay().get(timeout=TIMEOUT) == "stopped"
    assert runs == {"attempt": 1}


def test_a_cancel_during_a_step_does_not_wait_for_the_bodys_own_retry(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False, max_retries=None)
    def waits(self: DurableTask) -> str:
        try:
            ready = self.ctx.run(
                "check",
                lambda: runs.update(["check"]) or bool(cancel_invocation(app, self.request.id)),
            )
        except InvocationCancelled:
            return "stopped"
        if ready:
            raise self.retry(countdown=3600)
        return "checked"

    with worker():
        assert waits.delay().get(timeout=TIMEOUT) == "stopped"
    assert runs == {"check": 1}


def test_cancel_by_filter_cancels_what_has_not_finished(app: Celery, worker: Any) -> None:
    @app.task(base=DurableTask, bind=True, shared=False, name="flow.napper")
    def napper(self: DurableTask) -> None:
        self.ctx.sleep(3600)

    @app.task(base=DurableTask, bind=True, shared=False, name="flow.other")
    def other(self: DurableTask) -> None:
        self.ctx.sleep(3600)

    with worker():
        naps = [napper.delay() for _ in range(3)]
        keep = other.delay()
        for r in [*naps, keep]:
            wait_for(lambda r=r: status(app, r.id, "suspended"), "all to sleep")
        with pytest.raises(ValueError, match="only an invocation that has not finished"):
            cancel_invocations(app, task="flow.napper", status="completed")
        done = cancel_invocations(app, task="flow.napper", status="suspended", kill=True)
        assert sorted(d.id for d in done) == sorted(r.id for r in naps)
    assert [status(app, r.id, "cancelled") is not None for r in naps] == [True] * 3
    assert status(app, keep.id, "suspended") is not None


def test_a_deadline_cancels_a_sleeping_invocation(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False, durable_timeout=1.0)
    def slow(self: DurableTask) -> str:
        try:
            self.ctx.sleep(3600)
        except InvocationCancelled:
            self.ctx.run("cleanup", runs.update, ["cleanup"])
            raise
        return "woke"

    with worker():
        result = slow.delay()
        inv = wait_for(lambda: status(app, result.id, "suspended"), "it to sleep")
        assert inv.deadline is not None
        assert inv.deadline.timestamp() == pytest.approx(inv.created_at.timestamp() + 1, abs=0.1)
        with pytest.raises(InvocationCancelled, match="its deadline passed"):
            result.get(timeout=TIMEOUT)
    assert runs == {"cleanup": 1}
    ended = get_invocation(app, result.id)
    assert ended is not None and "deadline" in (ended.cancel_reason or "")


def test_a_key_lets_one_run_and_queues_the_others_in_order(app: Celery, worker: Any) -> None:
    order: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False, durable_concurrency_key="account")
    def transfer(self: DurableTask, account: str, n: int) -> int:
        self.ctx.run("log", order.append, f"{account}-{n}")
        self.ctx.sleep(0.3)
        self.ctx.run("done", order.append, f"{account}-{n}-done")
        return n

    with worker():
        results = [transfer.delay("acct", n) for n in range(3)]
        other = transfer.delay("elsewhere", 9)
        inv = wait_for(lambda: status(app, results[2].id, "suspended"), "the third to wait")
        assert inv.concurrency_key == "acct"
        slots = concurrency_slots(app, "acct")
        assert slots.holders == [results[0].id]
        assert [r.id for r in results[1:]] == slots.waiting
        assert [r.get(timeout=TIMEOUT) for r in results] == [0, 1, 2]
        assert other.get(timeout=TIMEOUT) == 9
    mine = [o for o in order if o.startswith("acct")]
    assert mine == ["acct-0", "acct-0-done", "acct-1", "acct-1-done", "acct-2", "acct-2-done"]
    assert order.index("elsewhere-9") < order.index("acct-0-done")  # it ran beside them
    assert concurrency_slots(app, "acct").holders == []


def test_a_waiter_cancelled_before_it_ran_ends_without_running_its_body(
    app: Celery, worker: Any
) -> None:
    bodies: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False, durable_concurrency_key="account")
    def hold(self: DurableTask, account: str, name: str) -> None:
        bodies.update([name])
        try:
            self.ctx.sleep(3600)
        except InvocationCancelled:
            self.ctx.run("compensate", bodies.update, [f"compensate-{name}"])
            raise

    with worker():
        holder = hold.delay("acct", "holder")
        wait_for(lambda: status(app, holder.id, "suspended"), "the holder to sleep")
        waiter = hold.delay("acct", "waiter")
        wait_for(lambda: status(app, waiter.id, "suspended"), "the waiter to wait")
        assert concurrency_slots(app, "acct").waiting == [waiter.id]
        cancel_invocation(app, waiter.id)
        with pytest.raises(InvocationCancelled):
            waiter.get(timeout=TIMEOUT)
        assert concurrency_slots(app, "acct").waiting == []  # it left the line
        cancel_invocation(app, holder.id)
        with pytest.raises(InvocationCancelled):
            holder.get(timeout=TIMEOUT)
    # The waiter never held the slot: it never ran its body, and had nothing to undo.
    assert bodies == {"holder": 2, "compensate-holder": 1}
    assert concurrency_slots(app, "acct").holders == []


def test_a_holder_that_replaces_itself_hands_its_slot_on(app: Celery, worker: Any) -> None:
    started: list[str] = []

    @app.task(shared=False, name="flow.slow_plain")
    def slow_plain() -> str:
        started.append("replacement")
        time.sleep(3)
        return "replaced"

    @app.task(base=DurableTask, bind=True, shared=False, durable_concurrency_key="account")
    def hand_over(self: DurableTask, account: str, replace: bool) -> str:
        self.ctx.sleep(0.5)
        if replace:
            raise self.replace(slow_plain.s())
        return "waited"

    with worker():
        holder = hand_over.delay("acct", True)
        wait_for(lambda: status(app, holder.id, "suspended"), "the holder to sleep")
        waiter = hand_over.delay("acct", False)
        wait_for(lambda: status(app, waiter.id, "suspended"), "the waiter to wait")
        wait_for(lambda: started, "the replacement to run")
        # The replacement holds no slot of the key: the waiter got it at the replace.
        slots = concurrency_slots(app, "acct")
        assert (slots.holders, slots.waiting) == ([waiter.id], [])
        assert holder.get(timeout=TIMEOUT) == "replaced"
        assert waiter.get(timeout=TIMEOUT) == "waited"


def test_a_wrong_concurrency_key_is_a_clear_error(app: Celery) -> None:
    @app.task(base=DurableTask, bind=True, shared=False, durable_concurrency_key="acount")
    def typo(self: DurableTask, account: str) -> None:
        pass

    @app.task(base=DurableTask, bind=True, shared=False, durable_concurrency_key="items")
    def listed(self: DurableTask, items: list[str]) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"names no parameter.*'account'"):
        typo.apply(("a",), throw=True)
    with pytest.raises(ConfigurationError, match="gave a list, not a str"):
        listed.apply((["a"],), throw=True)
