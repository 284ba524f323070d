"""Celery's retry idiom in eager mode and on the engine: ``raise self.retry()`` after a step.

A retry from the body re-opens the journal's last entry when this execution journaled
it, so the step runs again while every entry before it replays (``engine.reopen``).
The eager apps here keep their journals in memory; nothing listens on their Redis URL.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import pickle
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import EncodeError

from celery_durable import DurableTask, RetryableError, RetryPolicy
from celery_durable.context import DurableContext
from celery_durable.engine import reopen
from celery_durable.engine.attempts import Attempts
from celery_durable.engine.execution import Execution
from celery_durable.engine.replay_each_step import AbandonExecution
from celery_durable.errors import CodecError
from celery_durable.journal.records import Invocation, parse_invocation
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import Crash, begin, execute

NO_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def app() -> Iterator[Celery]:
    """An eager app whose errors stay in the result (Celery retries in apply())."""
    made = Celery(f"reopen-{uuid.uuid4().hex[:8]}", broker="memory://",
                  backend="cache+memory://", set_as_current=False)  # fmt: skip
    made.conf.update(task_always_eager=True, durable_redis_url=NO_REDIS)
    yield made
    release_runtime(made)
    made.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def journal(app: Celery, task_id: str) -> Invocation:
    found = runtime_for(app).eager_store.read(task_id)
    assert found is not None
    return parse_invocation(task_id, *found)


def steps(app: Celery, task_id: str) -> list[tuple[str, str, int]]:
    return [(s.name, s.status, s.attempts) for s in journal(app, task_id).steps]


def refusing(runs: Counter[str], name: str, times: int) -> Callable[[], str]:
    """A step that refuses the connection its first ``times`` runs."""

    def step() -> str:
        runs[name] += 1
        if runs[name] <= times:
            raise ConnectionError(f"{name} refused #{runs[name]}")
        return f"{name} #{runs[name]}"

    return step


def task(app: Celery, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    options = {"base": DurableTask, "bind": True, "shared": False, **options}
    return app.task(default_retry_delay=0, **options)  # type: ignore[no-any-return]


# -- The two idioms of the issue -----------------------------------------------------------


def test_a_retry_after_a_caught_step_failure_runs_that_step_again(app: Celery) -> None:
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=1)

    @task(app, max_retries=3)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return self.ctx.run("fetch", fetch)
        except ConnectionError as exc:
            raise self.retry(exc=exc) from None

    result = sync.apply()
    assert (result.state, result.result) == ("SUCCESS", "fetch #2")
    assert runs == {"prepare": 1, "fetch": 2}
    # The failed attempt counts: the second run was the step's attempt 2.
    assert steps(app, result.id) == [("before", "completed", 1), ("fetch", "completed", 2)]


def test_a_retry_after_a_steps_value_polls_that_step_again(app: Celery) -> None:
    runs: Counter[str] = Counter()

    def check() -> str:
        runs["check"] += 1
        return "done" if runs["check"] >= 3 else "pending"

    @task(app, max_retries=5)
    def wait_for_export(self: DurableTask, export_id: str) -> str:
        self.ctx.run("submit", runs.update, ["submit"])
        status = self.ctx.run("check", check)
        if status != "done":
            raise self.retry()
        return str(status)

    result = wait_for_export.apply(("e-1",))
    assert (result.state, result.result) == ("SUCCESS", "done")
    assert runs == {"submit": 1, "check": 3}
    assert steps(app, result.id) == [("submit", "completed", 1), ("check", "completed", 3)]


def test_max_retries_still_bounds_the_bodys_retries(app: Celery) -> None:
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=99)

    @task(app, max_retries=2)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return self.ctx.run("fetch", fetch)
        except ConnectionError as exc:
            raise self.retry(exc=exc) from None

    result = sync.apply()
    assert result.state == "FAILURE"
    assert isinstance(result.result, ConnectionError)
    assert str(result.result) == "fetch refused #3"
    assert runs == {"prepare": 1, "fetch": 3}
    # The last failure stays journaled: the retry that would exceed max_retries raised.
    inv = journal(app, result.id)
    assert (inv.status, inv.steps[-1].status, inv.steps[-1].attempts) == ("failed", "failed", 3)
    assert inv.error is not None
    assert (inv.error["type"], inv.error["attempts"]) == ("ConnectionError", 3)


def test_a_reopened_step_keeps_its_policys_limits(app: Celery) -> None:
    """Its policy gave up after 2 attempts; each retry of the body is one more attempt,
    which the exhausted policy does not retry on its own."""
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=99)
    seen: list[tuple[int, str]] = []

    @task(app, max_retries=4)
    def sync(self: DurableTask) -> str:
        try:
            return self.ctx.run(
                "fetch", fetch, retry=RetryPolicy(max_attempts=2, initial_interval=0)
            )
        except ConnectionError as exc:
            seen.append((exc.attempts, exc.metadata.get("gave_up", "")))  # type: ignore[attr-defined]
            raise self.retry(exc=exc) from None

    result = sync.apply()
    assert result.state == "FAILURE"
    # One Celery retry of the step's own policy, then three of the body's: five runs.
    assert runs["fetch"] == 5
    assert [attempts for attempts, _ in seen] == [2, 3, 4, 5]
    assert all(why == "all 2 attempts failed" for _, why in seen)


# -- What is never re-opened -------------------------------------------------------------


def test_an_at_most_once_step_is_never_reopened(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    runs: Counter[str] = Counter()
    pay = refusing(runs, "pay", times=1)

    @task(app, max_retries=2)
    def checkout(self: DurableTask) -> str:
        try:
            return self.ctx.run("pay", pay, at_most_once=True)
        except ConnectionError as exc:
            raise self.retry(exc=exc) from None

    with caplog.at_level(logging.WARNING, "celery_durable"):
        result = checkout.apply()
    assert result.state == "FAILURE"
    assert str(result.result) == "pay refused #1"
    assert runs == {"pay": 1}
    warned = [r.getMessage() for r in caplog.records if "Task.retry()" in r.getMessage()]
    assert len(warned) == 2  # one per retry
    assert result.id in warned[0]
    assert "step 'pay' (journal index 0): it is an at-most-once step" in warned[0]
    assert "RetryableError(retry_after=...)" in warned[0]
    assert "ctx.sleep(" in warned[0]
    assert "it was replayed from the journal" in warned[1]


def test_an_entry_that_later_entries_follow_is_not_reopened(app: Celery) -> None:
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=99)

    @task(app, max_retries=1)
    def sync(self: DurableTask) -> str:
        with contextlib.suppress(ConnectionError):
            self.ctx.run("fetch", fetch)
        mark = self.ctx.run("mark", lambda: runs.update(["mark"]) or runs["mark"])
        if self.request.retries < 1:
            raise self.retry()
        return f"mark #{mark}"

    result = sync.apply()
    assert (result.state, result.result) == ("SUCCESS", "mark #2")
    assert runs == {"fetch": 1, "mark": 2}  # the last entry ran again, not the one before


def test_a_retry_raised_inside_a_step_reopens_nothing_before_it(app: Celery) -> None:
    runs: Counter[str] = Counter()

    @task(app, max_retries=1)
    def decide(self: DurableTask) -> str:
        self.ctx.run("first", runs.update, ["first"])

        def decision() -> str:
            if self.request.retries < 1:
                raise self.retry()
            return "decided"

        return str(self.ctx.run("decide", decision))

    assert decide.apply().result == "decided"
    assert runs == {"first": 1}


# -- A step error that escapes into autoretry_for -----------------------------------------


def test_a_step_error_that_escapes_into_autoretry_for_reopens_the_step(app: Celery) -> None:
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=2)

    @task(app, autoretry_for=(ConnectionError,), max_retries=3)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        # Its own policy retries nothing: the error escapes the body, as in a plain task.
        return str(self.ctx.run("fetch", fetch, retry=RetryPolicy(max_attempts=1)))

    result = sync.apply()
    assert (result.state, result.result) == ("SUCCESS", "fetch #3")
    assert runs == {"prepare": 1, "fetch": 3}
    assert steps(app, result.id)[-1] == ("fetch", "completed", 3)


def test_autoretry_for_adds_no_retries_to_a_step_that_its_policy_retried(app: Celery) -> None:
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=99)

    @task(app, autoretry_for=(ConnectionError,), max_retries=2)
    def sync(self: DurableTask) -> str:
        return str(self.ctx.run("fetch", fetch))  # the default policy: autoretry_for's

    result = sync.apply()
    assert result.state == "FAILURE"
    assert str(result.result) == "fetch refused #3"
    assert runs == {"fetch": 3}
    assert steps(app, result.id) == [("fetch", "failed", 3)]


def test_a_steps_policy_retry_does_not_lift_max_retries_for_a_later_autoretry(
    app: Celery,
) -> None:
    """A step policy's retry asks Celery for max_retries=sys.maxsize; Celery keeps that on
    the task for its autoretry wrapper, which must not use it afterwards."""
    runs: Counter[str] = Counter()
    flaky = refusing(runs, "flaky", times=1)

    @task(app, autoretry_for=(ConnectionError,), max_retries=2)
    def sync(self: DurableTask) -> str:
        self.ctx.run("flaky", flaky)  # fails once: its policy retries it
        runs["body"] += 1
        raise ConnectionError("the body's own")

    result = sync.apply()
    assert result.state == "FAILURE"
    assert str(result.result) == "the body's own"
    # Retries: the step's, then the body's error twice; the third time it fails. An
    # error of the body's own does not re-open the step before it.
    assert runs == {"flaky": 2, "body": 2}


def test_autoretry_for_an_error_of_the_body_reopens_no_step(app: Celery) -> None:
    runs: Counter[str] = Counter()

    @task(app, autoretry_for=(ConnectionError,), max_retries=2)
    def charge(self: DurableTask) -> str:
        self.ctx.run("charge", runs.update, ["charge"])
        runs["notify"] += 1
        if runs["notify"] < 3:
            raise ConnectionError("the mail server is down")  # outside any step
        return "charged"

    assert charge.apply().result == "charged"
    assert runs == {"charge": 1, "notify": 3}


# -- Combinators, async steps, the test mode ----------------------------------------------


def test_a_retry_after_all_reopens_all_of_its_async_steps(app: Celery) -> None:
    runs: Counter[str] = Counter()
    b = refusing(runs, "b", times=1)

    @task(app, max_retries=2)
    def both(self: DurableTask) -> list[str]:
        ctx = self.ctx
        ctx.run("before", runs.update, ["prepare"])
        try:
            values: list[str] = ctx.all(
                ctx.run_async("a", lambda: runs.update(["a"]) or f"a #{runs['a']}"),
                ctx.run_async("b", b),
            ).result()
        except ConnectionError as exc:
            raise self.retry(exc=exc) from None
        return values

    result = both.apply()
    assert (result.state, result.result) == ("SUCCESS", ["a #2", "b #2"])
    assert runs == {"prepare": 1, "a": 2, "b": 2}
    assert steps(app, result.id) == [
        ("before", "completed", 1), ("a", "completed", 2), ("b", "completed", 2),
        ("all", "completed", 1),
    ]  # fmt: skip


def test_a_retry_after_a_lone_async_step_reopens_it(app: Celery) -> None:
    runs: Counter[str] = Counter()

    @task(app, max_retries=3)
    def poll(self: DurableTask) -> str:
        status = self.ctx.run_async("check", lambda: runs.update(["check"]) or runs["check"])
        if status.result() < 2:
            raise self.retry()
        return "done"

    result = poll.apply()
    assert (result.state, result.result) == ("SUCCESS", "done")
    assert runs == {"check": 2}
    assert steps(app, result.id) == [("check", "completed", 2)]


def test_the_idiom_holds_in_replay_each_step_mode(app: Celery) -> None:
    """Every entry is replayed by an execution after the one that journaled it: that one
    takes the entry over, so that its retry re-opens it as in production."""
    app.conf.durable_replay_each_step = True
    runs: Counter[str] = Counter()
    fetch = refusing(runs, "fetch", times=1)

    @task(app, max_retries=3)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return str(self.ctx.run("fetch", fetch))
        except ConnectionError as exc:
            raise self.retry(exc=exc) from None

    result = sync.apply()
    assert (result.state, result.result) == ("SUCCESS", "fetch #2")
    assert runs == {"prepare": 1, "fetch": 2}


# -- The unstorable result -------------------------------------------------------------


def test_a_result_the_codec_cannot_store_is_an_encode_error_and_a_codec_error(
    app: Celery,
) -> None:
    @task(app)
    def tags(self: DurableTask) -> set[str]:
        return {"a", "b"}

    result = tags.apply()
    assert result.state == "FAILURE"
    error = result.result
    assert isinstance(error, EncodeError) and isinstance(error, CodecError)
    assert f"invocation {result.id} returned a set that its codec cannot store" in str(error)
    # Celery pickles exceptions; the result backend stores it under kombu's name.
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert (type(error).__module__, type(error).__qualname__) == ("kombu.exceptions", "EncodeError")
    assert journal(app, result.id).status == "failed"


# -- The engine: what plan() re-opens -----------------------------------------------------


def execution(store: MemoryJournalStore) -> Execution:
    started = begin(store)
    assert isinstance(started, Execution)
    return started


def test_plan_reopens_the_last_step_with_its_attempts() -> None:
    store = MemoryJournalStore()
    ex = execution(store)
    ctx = DurableContext(ex)
    ctx.run("a", lambda: 1)
    with pytest.raises(ValueError):
        ctx.run(
            "b", _raise, ValueError("no"), retry=RetryPolicy(max_attempts=3, retry_on=(KeyError,))
        )
    plan = reopen.plan(ex)
    assert plan is not None
    assert (plan.start, plan.last) == (1, ex.entries[1])
    attempts = Attempts.from_json(plan.attempt)
    assert (attempts.index, attempts.name, attempts.failures, attempts.limit) == (1, "b", 1, 3)
    assert attempts.error == {"type": "ValueError", "message": "no"}


def test_plan_reopens_nothing_replayed_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryJournalStore()

    def body(ctx: DurableContext) -> None:
        ctx.run("check", lambda: "pending")
        raise Crash  # the worker dies before the retry

    with pytest.raises(Crash):
        execute(store, body)
    ex = execution(store)
    assert DurableContext(ex).run("check", lambda: "never") == "pending"
    with caplog.at_level(logging.WARNING, "celery_durable"):
        assert reopen.plan(ex) is None
    [warning] = caplog.records
    assert "invocation inv-1: Task.retry() after step 'check' (journal index 0)" in warning.message


def test_plan_reopens_nothing_after_a_timer_or_before_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryJournalStore()
    ex = execution(store)
    ctx = DurableContext(ex)
    ctx.run("a", lambda: 1)
    ctx.timer(0, "wait")
    with caplog.at_level(logging.WARNING, "celery_durable"):
        assert reopen.plan(ex) is None  # a timer: no value to replay
        ex.position = 0
        assert reopen.plan(ex) is None  # the body did not reach the end of the journal
    assert caplog.records == []


def test_plan_reopens_a_combinator_only_over_async_steps_it_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryJournalStore()
    ex = execution(store)
    ctx = DurableContext(ex)
    ctx.run("a", lambda: 1)
    b, c = ctx.run_async("b", lambda: 2), ctx.run_async("c", lambda: 3)
    ctx.all(c, b).result()  # in any order: the records go by journal index
    plan = reopen.plan(ex)
    assert plan is not None
    assert plan.start == 1
    attempts = Attempts.from_json(plan.attempt)
    assert [(a.index, a.name, a.failures) for a in (attempts, *attempts.more)] == [
        (1, "b", 1), (2, "c", 1),
    ]  # fmt: skip
    ctx.any(ctx.run_async("d", lambda: 4), ctx.timer(0, "t")).result()
    with caplog.at_level(logging.WARNING, "celery_durable"):
        assert reopen.plan(ex) is None
    assert "ctx.any 'any' (journal index 6): it waits for more than run_async" in caplog.text


def test_an_async_step_retried_with_a_block_counts_its_attempts_on() -> None:
    store = MemoryJournalStore()
    ex = execution(store)
    ctx = DurableContext(ex)
    ctx.all(ctx.run_async("b", lambda: 2), ctx.run_async("c", lambda: 3)).result()
    plan = reopen.plan(ex)
    assert plan is not None
    assert store.release("inv-1", ex.fence, reopen=plan)
    # Until they run again, both show as waiting for their next attempt.
    shown = parse_invocation("inv-1", *(store.read("inv-1") or ({}, [], {})))
    assert [(s.index, s.name, s.status, s.attempts) for s in shown.steps] == [
        (0, "b", "retrying", 1), (1, "c", "retrying", 1),
    ]  # fmt: skip
    again = execution(store)
    ctx = DurableContext(again)
    assert ctx.all(ctx.run_async("b", lambda: 5), ctx.run_async("c", lambda: 6)).result() == [5, 6]
    assert [json.loads(e).get("a", 1) for e in store.journals["inv-1"]] == [2, 2, 1]
    assert "attempt" not in store.meta["inv-1"]


def _raise(error: Exception) -> None:
    raise error


def test_retryable_error_is_the_durable_way_to_poll(app: Celery) -> None:
    """What the warning recommends works: the step's own policy polls it."""
    runs: Counter[str] = Counter()

    def check() -> str:
        runs["check"] += 1
        if runs["check"] < 3:
            raise RetryableError("not ready yet", retry_after=0)
        return "done"

    @task(app)
    def wait(self: DurableTask) -> str:
        self.ctx.run("submit", runs.update, ["submit"])
        return str(self.ctx.run("check", check, retry=RetryPolicy(max_attempts=5)))

    assert wait.apply().result == "done"
    assert runs == {"submit": 1, "check": 3}


def test_the_signal_that_abandons_an_execution_survives_pickling() -> None:
    signal = pickle.loads(pickle.dumps(AbandonExecution("inv-1", 3, fence=4, own_from=2)))
    assert (signal.invocation_id, signal.index, signal.fence, signal.own_from) == ("inv-1", 3, 4, 2)
