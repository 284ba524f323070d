"""Step retries through a real worker: Celery retries, states, signals and limits."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from celery import Celery, signals
from kombu.exceptions import EncodeError

from celery_durable import DurableTask, RetryPolicy, TerminalError, get_invocation
from celery_durable.errors import CodecError

TIMEOUT = 30
FAST = RetryPolicy(max_attempts=3, initial_interval=0.05, factor=1)


def failing(runs: Counter[str], name: str, times: int | None = None) -> Any:
    """A step function that fails its first ``times`` calls (all of them if None)."""

    def step() -> str:
        runs[name] += 1
        if times is None or runs[name] <= times:
            raise ValueError(f"{name} failed #{runs[name]}")
        return f"{name} ok"

    return step


def test_n_failures_then_success_retries_through_celery(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()
    retries_seen: list[int] = []
    retry_signals: list[str] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def flaky(self: DurableTask) -> str:
        retries_seen.append(self.request.retries)
        self.ctx.run("first", runs.update, ["first"])
        return self.ctx.run("flaky", failing(runs, "flaky", times=2), retry=FAST)

    def on_retry(sender: Any = None, **_: Any) -> None:
        if sender is not None and sender.name == flaky.name:
            retry_signals.append("retry")

    signals.task_retry.connect(on_retry, weak=False)
    try:
        with worker():
            result = flaky.delay()
            assert result.get(timeout=TIMEOUT) == "flaky ok"
    finally:
        signals.task_retry.disconnect(on_retry)

    assert runs == {"first": 1, "flaky": 3}
    assert retries_seen == [0, 1, 2]
    assert retry_signals == ["retry", "retry"]
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("first", "completed", 1),
        ("flaky", "completed", 3),
    ]


def test_a_pending_retry_shows_in_the_journal_and_as_celery_retry_state(
    app: Celery, worker: Any
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def slow_retry(self: DurableTask) -> None:
        self.ctx.run("down", failing(Counter(), "down"), retry=RetryPolicy(initial_interval=60))

    with worker():
        result = slow_retry.delay()
        deadline = time.monotonic() + TIMEOUT
        while result.state != "RETRY":
            assert time.monotonic() < deadline, result.state
            time.sleep(0.05)
    inv = get_invocation(app, result.id)
    assert inv is not None
    [step] = inv.steps
    assert (step.name, step.status, step.attempts) == ("down", "retrying", 1)
    assert step.error == {"type": "ValueError", "message": "down failed #1"}


def test_max_attempts_one_hands_the_first_failure_to_the_handler(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def once(self: DurableTask) -> str:
        try:
            self.ctx.run("once", failing(runs, "once"), retry=RetryPolicy(max_attempts=1))
        except TerminalError as exc:
            return f"caught {exc.error_type} after {exc.attempts}"
        return "no error"

    with worker():
        assert once.delay().get(timeout=TIMEOUT) == "caught ValueError after 1"
    assert runs == {"once": 1}


def test_an_exhausted_step_can_be_compensated(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False)
    def saga(self: DurableTask) -> str:
        self.ctx.run("reserve", runs.update, ["reserve"])
        try:
            self.ctx.run("charge", failing(runs, "charge"), retry=FAST)
        except TerminalError:
            self.ctx.run("release", runs.update, ["release"])
            return "cancelled"
        return "charged"

    with worker():
        assert saga.delay().get(timeout=TIMEOUT) == "cancelled"
    assert runs == {"reserve": 1, "charge": 3, "release": 1}


def test_an_unhandled_exhausted_step_fails_the_task_with_its_original_type(
    app: Celery, worker: Any
) -> None:
    charge = failing(Counter(), "charge")

    @app.task(base=DurableTask, bind=True, shared=False)
    def doomed(self: DurableTask) -> None:
        self.ctx.run("charge", charge, retry=FAST)

    with worker():
        result = doomed.delay()
        with pytest.raises(ValueError, match=r"^charge failed #3$"):
            result.get(timeout=TIMEOUT)
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert inv.status == "failed"
    assert inv.steps[0].error is not None
    assert inv.steps[0].error["attempts"] == 3


def test_max_duration_stops_retries_before_attempts_run_out(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()
    policy = RetryPolicy(max_attempts=100, max_duration=0.6, initial_interval=0.25, factor=1)

    @app.task(base=DurableTask, bind=True, shared=False)
    def bounded(self: DurableTask) -> str:
        try:
            self.ctx.run("down", failing(runs, "down"), retry=policy)
        except TerminalError as exc:
            return str(exc.metadata["gave_up"])
        return "ok"

    with worker():
        reason = bounded.delay().get(timeout=TIMEOUT)
    assert "max_duration=0.6" in reason
    # Attempts at about 0, 0.25 and 0.5 s; a fourth would start after 0.6 s.
    assert runs["down"] <= 3


def test_celery_max_retries_does_not_cut_a_step_policy_short(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False, max_retries=0)
    def stubborn(self: DurableTask) -> str:
        return self.ctx.run("flaky", failing(runs, "flaky", times=3), retry=RetryPolicy(
            max_attempts=5, initial_interval=0.01))  # fmt: skip

    with worker():
        assert stubborn.delay().get(timeout=TIMEOUT) == "flaky ok"
    assert runs == {"flaky": 4}


def test_the_default_policy_comes_from_the_tasks_celery_options(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(
        base=DurableTask, bind=True, shared=False, autoretry_for=(ValueError,), max_retries=2,
        default_retry_delay=0,
    )  # fmt: skip
    def celery_style(self: DurableTask) -> int:
        try:
            self.ctx.run("down", failing(runs, "down"))
        except TerminalError as exc:
            return exc.attempts
        return 0

    with worker():
        assert celery_style.delay().get(timeout=TIMEOUT) == 3
    assert runs == {"down": 3}


def test_by_default_a_step_error_fails_at_once_as_in_a_plain_task(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()

    @app.task(base=DurableTask, bind=True, shared=False, autoretry_for=(KeyError,))
    def plain_habits(self: DurableTask) -> None:
        self.ctx.run("down", failing(runs, "down"))  # a ValueError: not in autoretry_for

    with worker():
        result = plain_habits.delay()
        with pytest.raises(ValueError, match="down failed #1"):
            result.get(timeout=TIMEOUT)
    assert runs == {"down": 1}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert (inv.status, inv.steps[0].status, inv.steps[0].attempts) == ("failed", "failed", 1)


def test_a_terminal_error_is_never_caught_by_autoretry_for(app: Celery, worker: Any) -> None:
    bodies: list[int] = []

    @app.task(
        base=DurableTask, bind=True, shared=False,
        autoretry_for=(Exception,), dont_autoretry_for=(KeyError,), retry_kwargs={"countdown": 0},
    )  # fmt: skip
    def guarded(self: DurableTask) -> None:
        bodies.append(self.request.retries)
        self.ctx.run("no", _terminal)

    with worker():
        result = guarded.delay()
        with pytest.raises(TerminalError, match="declined"):
            result.get(timeout=TIMEOUT)
    assert bodies == [0]


def _terminal() -> None:
    raise TerminalError("declined")


def test_retry_countdowns_follow_the_policy(app: Celery, worker: Any) -> None:
    countdowns: list[float] = []
    policy = RetryPolicy(max_attempts=4, initial_interval=0.2, factor=2, jitter=0)

    down = failing(Counter(), "down", times=3)

    @app.task(base=DurableTask, bind=True, shared=False)
    def paced(self: DurableTask) -> str:
        return self.ctx.run("down", down, retry=policy)

    def on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers and headers.get("task") == paced.name and headers.get("eta"):
            eta = datetime.fromisoformat(headers["eta"])
            countdowns.append((eta - datetime.now(eta.tzinfo)).total_seconds())

    signals.before_task_publish.connect(on_publish, weak=False)
    try:
        with worker():
            assert paced.delay().get(timeout=TIMEOUT) == "down ok"
    finally:
        signals.before_task_publish.disconnect(on_publish)
    assert countdowns == pytest.approx([0.2, 0.4, 0.8], abs=0.1)


# -- Celery's retry idioms around a step ---------------------------------------------------


def test_a_retry_after_a_caught_failure_runs_the_step_again_and_not_those_before(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()
    fetch = failing(runs, "fetch", times=1)

    @app.task(base=DurableTask, bind=True, shared=False, max_retries=3, default_retry_delay=0.1)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return str(self.ctx.run("fetch", fetch))
        except ValueError as exc:
            raise self.retry(exc=exc) from None

    with worker():
        result = sync.delay()
        assert result.get(timeout=TIMEOUT) == "fetch ok"
    assert runs == {"prepare": 1, "fetch": 2}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("before", "completed", 1),
        ("fetch", "completed", 2),
    ]


def test_a_retry_to_poll_runs_the_check_again_until_it_reports_done(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()

    def check(export_id: str) -> str:
        runs["check"] += 1
        return "done" if runs["check"] >= 3 else "pending"

    @app.task(base=DurableTask, bind=True, shared=False, max_retries=5, default_retry_delay=0.1)
    def wait_for_export(self: DurableTask, export_id: str) -> str:
        self.ctx.run("submit", runs.update, ["submit"])
        status = str(self.ctx.run("check", check, export_id))
        if status != "done":
            raise self.retry()
        return status

    with worker():
        result = wait_for_export.delay("e-7")
        assert result.get(timeout=TIMEOUT) == "done"
    assert runs == {"submit": 1, "check": 3}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.value, s.attempts) for s in inv.steps] == [
        ("submit", None, 1),
        ("check", "done", 3),
    ]


def test_a_retry_never_reopens_an_at_most_once_step(
    app: Celery, worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runs: Counter[str] = Counter()
    pay = failing(runs, "pay", times=1)

    @app.task(base=DurableTask, bind=True, shared=False, max_retries=2, default_retry_delay=0)
    def checkout(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return str(self.ctx.run("pay", pay, at_most_once=True))
        except ValueError as exc:
            raise self.retry(exc=exc) from None

    with caplog.at_level(logging.WARNING, "celery_durable"), worker():
        result = checkout.delay()
        with pytest.raises(ValueError, match=r"^pay failed #1$"):
            result.get(timeout=TIMEOUT)
    assert runs == {"prepare": 1, "pay": 1}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.status, s.attempts) for s in inv.steps] == [
        ("before", "completed", 1),
        ("pay", "failed", 1),
    ]
    warned = [r.getMessage() for r in caplog.records if "Task.retry() after" in r.getMessage()]
    assert len(warned) == 2, warned
    assert all(result.id in w and "step 'pay'" in w for w in warned)


def test_a_step_error_that_escapes_into_autoretry_for_runs_the_step_again(
    app: Celery, worker: Any
) -> None:
    runs: Counter[str] = Counter()
    fetch = failing(runs, "fetch", times=2)

    @app.task(
        base=DurableTask, bind=True, shared=False, autoretry_for=(ValueError,), max_retries=3,
        retry_kwargs={"countdown": 0},
    )  # fmt: skip
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        return str(self.ctx.run("fetch", fetch, retry=RetryPolicy(max_attempts=1)))

    with worker():
        result = sync.delay()
        assert result.get(timeout=TIMEOUT) == "fetch ok"
    assert runs == {"prepare": 1, "fetch": 3}
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert [(s.name, s.attempts) for s in inv.steps] == [("before", 1), ("fetch", 3)]


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_result_the_codec_cannot_store_fails_with_encode_error(
    app: Celery, worker: Any, serializer: str
) -> None:
    app.conf.update(result_serializer=serializer, result_accept_content=["json", "pickle"])

    @app.task(base=DurableTask, bind=True, shared=False)
    def tags(self: DurableTask) -> set[str]:
        return {"a"}

    with worker():
        result = tags.delay()
        with pytest.raises(EncodeError, match="returned a set that its codec cannot store") as got:
            result.get(timeout=TIMEOUT)
    # Pickled, it comes back as itself: a CodecError too. As JSON, as kombu's own type.
    assert isinstance(got.value, CodecError) == (serializer == "pickle")
    inv = get_invocation(app, result.id)
    assert inv is not None
    assert inv.status == "failed"
    assert inv.error is not None
    assert (inv.error["module"], inv.error["type"]) == ("kombu.exceptions", "EncodeError")


def test_the_retry_idiom_holds_in_replay_each_step_mode_on_a_worker(
    app: Celery, worker: Any
) -> None:
    """Each entry is replayed by the delivery after the one that journaled it; that one
    takes it over (a header of the redelivery), so its retry re-opens the step."""
    app.conf.durable_replay_each_step = True
    runs: Counter[str] = Counter()
    fetch = failing(runs, "fetch", times=1)

    # Every redelivery of the mode is a Celery retry too: room for them in max_retries.
    @app.task(base=DurableTask, bind=True, shared=False, max_retries=10, default_retry_delay=0)
    def sync(self: DurableTask) -> str:
        self.ctx.run("before", runs.update, ["prepare"])
        try:
            return str(self.ctx.run("fetch", fetch))
        except ValueError as exc:
            raise self.retry(exc=exc) from None

    with worker():
        assert sync.delay().get(timeout=TIMEOUT) == "fetch ok"
    assert runs == {"prepare": 1, "fetch": 2}
