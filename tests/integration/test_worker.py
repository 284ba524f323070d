"""DurableTask through a real (in-thread) worker and the real Redis."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import (
    CodecError,
    ContextError,
    DurableTask,
    JsonCodec,
    NonDeterminismError,
    TerminalError,
    ValueTooLargeError,
    get_invocation,
    list_invocations,
)
from tests.processes import wait_for

TIMEOUT = 30


def apply_once_the_lease_is_over(task: Any, task_id: str) -> Any:
    """``task.apply()`` once the "killed" execution's lease ran out: until then a
    delivery finds the invocation busy, runs nothing and fails with ContextError."""

    def attempt() -> Any:
        result = task.apply(task_id=task_id)
        busy = isinstance(result.result, ContextError) and "already running" in str(result.result)
        return None if busy else result

    return wait_for(attempt, f"the lease of {task_id} to run out", TIMEOUT, interval=0.01)


@dataclasses.dataclass
class Parcel:
    tracking: str
    weight: float


def test_steps_run_once_and_the_journal_shows_them(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    def reserve(order: str) -> dict[str, Any]:
        runs["reserve"] += 1
        return {"order": order, "items": (1, 2)}

    @app.task(base=DurableTask, bind=True, shared=False)
    def checkout(self: DurableTask, order: str) -> dict[str, Any]:
        stock = self.ctx.run("reserve", reserve, order)
        key = str(self.ctx.rand.uuid4())
        return {"stock": stock, "key": key}

    with worker():
        async_result = checkout.delay("o-1")
        result = async_result.get(timeout=TIMEOUT)

    assert result["stock"] == {"order": "o-1", "items": [1, 2]}
    assert runs == {"reserve": 1}
    inv = get_invocation(app, async_result.id)
    assert inv is not None
    assert [i.id for i in list_invocations(app)] == [async_result.id]
    assert inv.task_name == checkout.name
    assert inv.status == "completed"
    assert inv.result == result
    assert [(s.index, s.name, s.kind, s.status, s.value) for s in inv.steps] == [
        (0, "reserve", "run", "completed", {"order": "o-1", "items": [1, 2]})
    ]
    assert inv.steps[0].started_at is not None
    assert inv.steps[0].finished_at is not None
    assert inv.steps[0].started_at <= inv.steps[0].finished_at


def test_a_celery_retry_replays_the_steps_before_it(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()
    seen_keys: list[str] = []

    def step(name: str) -> str:
        runs[name] += 1
        return name.upper()

    @app.task(base=DurableTask, bind=True, shared=False)
    def flaky(self: DurableTask) -> list[str]:
        first = self.ctx.run("first", step, "first")
        seen_keys.append(str(self.ctx.rand.uuid4()))
        self.ctx.run("checked", step, "checked")
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        second = self.ctx.run("second", step, "second")
        return [first, second]

    with worker():
        assert flaky.delay().get(timeout=TIMEOUT) == ["FIRST", "SECOND"]
    # The step the retry follows runs again (Celery's retry idiom); the one before replays.
    assert runs == {"first": 1, "checked": 2, "second": 1}
    assert len(seen_keys) == 2
    assert seen_keys[0] == seen_keys[1]


def test_a_handler_compensates_a_terminal_step_error(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    def charge() -> None:
        runs["charge"] += 1
        raise TerminalError("card declined", {"code": 51})

    def release() -> str:
        runs["release"] += 1
        return "released"

    @app.task(base=DurableTask, bind=True, shared=False)
    def saga(self: DurableTask) -> dict[str, Any]:
        try:
            self.ctx.run("charge", charge)
        except TerminalError as exc:
            return {"cancelled": exc.message, "release": self.ctx.run("release", release)}
        return {"cancelled": None}

    with worker():
        result = saga.delay()
        assert result.get(timeout=TIMEOUT) == {"cancelled": "card declined", "release": "released"}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.status) for s in inv.steps] == [
        ("charge", "failed"),
        ("release", "completed"),
    ]
    error = dict(inv.steps[0].error or {})
    assert 'raise TerminalError("card declined"' in error.pop("traceback")
    assert error == {
        "type": "TerminalError",
        "module": "celery_durable.errors",
        "qualname": "TerminalError",
        "message": "card declined",
        "args": [],
        "metadata": {"code": 51},
        "attempts": 1,
    }
    assert runs == {"charge": 1, "release": 1}


def test_an_uncaught_terminal_error_fails_the_task_and_is_journaled(
    app: Celery, worker: Any
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def doomed(self: DurableTask) -> None:
        self.ctx.run("check", _refuse)

    with worker():
        result = doomed.delay()
        with pytest.raises(TerminalError, match="out of stock"):
            result.get(timeout=TIMEOUT)
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert inv.status == "failed"
    assert inv.error is not None
    assert inv.error["message"] == "out of stock"


def _refuse() -> None:
    raise TerminalError("out of stock")


def test_a_finished_invocation_delivered_again_does_not_run(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def once(self: DurableTask, n: int) -> int:
        runs["body"] += 1
        return int(self.ctx.run("double", lambda: n * 2))

    with worker():
        first = once.delay(21)
        assert first.get(timeout=TIMEOUT) == 42
        again = once.apply_async((21,), task_id=first.id)
        assert again.get(timeout=TIMEOUT) == 42
    assert runs == {"body": 1}


def test_typed_and_pickled_step_values_come_back_as_their_types(app: Celery, worker: Any) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def ship(self: DurableTask) -> list[str]:
        parcel = self.ctx.run("label", Parcel, "T-1", 2.5, codec=JsonCodec(Parcel))
        tags = self.ctx.run("tags", lambda: {"fragile"}, codec="pickle")
        return [type(parcel).__name__, parcel.tracking, type(tags).__name__]

    with worker():
        assert ship.delay().get(timeout=TIMEOUT) == ["Parcel", "T-1", "set"]


def test_an_unencodable_step_value_fails_clearly_and_journals_nothing(
    app: Celery, worker: Any
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def bad(self: DurableTask) -> None:
        self.ctx.run("make_set", lambda: {1, 2})

    with worker():
        result = bad.delay()
        with pytest.raises(CodecError, match="step 'make_set'"):
            result.get(timeout=TIMEOUT)
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert inv.steps == []
    assert inv.status == "failed"


def test_ctx_outside_an_invocation_is_a_clear_error(app: Celery) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def task(self: DurableTask) -> None:
        pass

    with pytest.raises(ContextError, match="outside a running invocation"):
        _ = task.ctx


def test_finished_journals_expire_and_a_lost_running_one_is_recovered_then_expires(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    app.conf.update(durable_retention=120, durable_lease_ttl=1, durable_recovery_after=1)
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def task(self: DurableTask, finish: bool) -> str:
        self.ctx.run("a", lambda: runs.update(["a"]))
        if not finish and runs["interrupted"] == 0:
            runs["interrupted"] += 1
            # Ends the execution as a dying worker would: the lease is never released,
            # and there is no message to deliver it again.
            raise KeyboardInterrupt
        return "done"

    task.apply((True,), task_id="done")
    with pytest.raises(KeyboardInterrupt):
        task.apply((False,), task_id="running")
    for done, running in (("meta", "meta"), ("steps", "journal")):
        # (A completed invocation's journal is packed, into its steps key.)
        assert 0 < redis_client.ttl(f"{key_prefix}:{{done}}:{done}") <= 120
        # A running journal never expires by itself...
        assert redis_client.ttl(f"{key_prefix}:{{running}}:{running}") == -1
    assert [i.id for i in list_invocations(app, status="running")] == ["running"]

    # ...but it does not stay running for ever: a worker's recovery sweep publishes it
    # again from its stored call once its lease ran out durable_recovery_after ago.
    with worker():
        deadline = time.monotonic() + TIMEOUT
        while (inv := get_invocation(app, "running")) is None or inv.status == "running":
            assert time.monotonic() < deadline, "the lost invocation was never recovered"
            time.sleep(0.1)
    assert (inv.status, inv.result) == ("completed", "done")
    assert runs == {"a": 2, "interrupted": 1}  # step "a" of "running" ran once, then replayed
    for part in ("meta", "steps"):
        assert 0 < redis_client.ttl(f"{key_prefix}:{{running}}:{part}") <= 120


def test_a_direct_call_runs_like_a_function_and_leaves_no_journal(app: Celery) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def direct(self: DurableTask, n: int) -> int:
        return int(self.ctx.run("double", lambda: runs.update(["double"]) or n * 2))

    assert direct(21) == 42
    assert direct(21) == 42  # a new invocation each call, as for any function
    assert runs == {"double": 2}
    assert list_invocations(app) == []


def test_a_swallowed_non_determinism_error_still_fails_and_keeps_it_paused(
    app: Celery,
) -> None:
    app.conf.durable_lease_ttl = 0.01  # the "killed" execution's lease is over at once
    step_name = {"value": "old"}

    @app.task(base=DurableTask, bind=True, shared=False)
    def careless(self: DurableTask) -> str:
        try:
            self.ctx.run(step_name["value"], lambda: 1)
        except Exception:
            return "swallowed"
        if step_name["value"] == "old":
            raise KeyboardInterrupt  # dies after the step, like a killed worker
        return "done"

    with pytest.raises(KeyboardInterrupt):
        careless.apply(task_id="careless-1")
    step_name["value"] = "new"
    with pytest.raises(NonDeterminismError):
        apply_once_the_lease_is_over(careless, "careless-1").get()
    inv = get_invocation(app, "careless-1")
    assert inv is not None
    assert (inv.status, inv.result) == ("paused", None)


def test_autoretry_for_does_not_retry_a_non_determinism_error(app: Celery) -> None:
    app.conf.durable_lease_ttl = 0.01  # the "killed" execution's lease is over at once
    bodies: list[int] = []
    step_name = {"value": "old"}

    @app.task(base=DurableTask, bind=True, shared=False, autoretry_for=(Exception,),
              retry_kwargs={"countdown": 0, "max_retries": 3})  # fmt: skip
    def renamed(self: DurableTask) -> None:
        bodies.append(1)
        self.ctx.run(step_name["value"], lambda: 1)
        if step_name["value"] == "old":
            raise KeyboardInterrupt  # dies after the step, like a killed worker

    with pytest.raises(KeyboardInterrupt):
        renamed.apply(task_id="renamed-1")
    step_name["value"] = "new"
    bodies.clear()
    result = apply_once_the_lease_is_over(renamed, "renamed-1")
    with pytest.raises(NonDeterminismError):
        result.get()
    assert bodies == [1]
    inv = get_invocation(app, "renamed-1")
    assert inv is not None
    assert inv.status == "paused"


def test_arguments_over_durable_max_value_bytes_are_refused_where_the_caller_sees_it(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    app.conf.durable_max_value_bytes = 64 * 1024
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def upload(self: DurableTask, blob: str) -> int:
        runs.append(len(blob))
        return len(blob)

    with pytest.raises(ValueTooLargeError, match="durable_max_value_bytes=65536") as raised:
        upload.apply_async(args=("x" * 70_000,))
    assert "nothing was sent" in str(raised.value)
    assert "a reference to large data" in str(raised.value)
    assert redis_client.llen(key_prefix) == 0
    assert upload.apply_async(args=("x" * 1000,), task_id="small").id == "small"


def test_a_worker_never_stores_a_call_over_durable_max_value_bytes(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    app.conf.durable_max_value_bytes = 64 * 1024
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def upload(self: DurableTask, blob: str) -> int:
        runs.append(self.ctx.run("size", len, blob))
        return len(blob)

    with worker():
        # send_task does not pass through apply_async's check: the worker's catches it.
        sent = app.send_task(upload.name, args=("x" * 100_000,), task_id="big")
        with pytest.raises(ValueTooLargeError, match="durable_max_value_bytes=65536"):
            sent.get(timeout=TIMEOUT)
    assert runs == []
    inv = get_invocation(app, "big")
    assert inv is not None and inv.status == "failed" and inv.steps == []
    assert inv.error is not None and inv.error["type"] == "ValueTooLargeError"
    meta = f"{key_prefix}:{{big}}:meta"
    assert not redis_client.hexists(meta, "call")
    assert redis_client.ttl(meta) > 0
