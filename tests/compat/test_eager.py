"""Eager mode (``task_always_eager``) and direct calls: the same bodies, no worker, no Redis.

The apps here use broker ``memory://`` and backend ``cache+memory://``. Their
``durable_redis_url`` names a port where nothing listens: eager execution keeps its
journal in memory (``durable_eager_journal`` defaults to ``memory``), so a durable task
that touched Redis for its journal would fail here instead of passing unnoticed.
"""

from __future__ import annotations

import gc
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery, chain, chord

from celery_durable.runtime import release_runtime
from tests.compat.bodies import register
from tests.compat.harness import VARIANTS, describe_exc, typed

pytestmark = pytest.mark.compat

#: Nothing listens on port 1: a journal written to Redis fails loudly.
NO_REDIS = "redis://127.0.0.1:1/0"


class MemoryStore:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def count(self, tag: str, step: str) -> int:
        self.counts[tag, step] += 1
        return self.counts[tag, step]

    def is_unacked(self, task_id: str) -> bool:
        raise AssertionError("no broker in eager mode")


#: The store of each eager app's step functions, by app name: what ran.
STORES: dict[str, MemoryStore] = {}


def eager_app(propagates: bool) -> Celery:
    app = Celery(
        f"compat-eager-{uuid.uuid4().hex[:8]}",
        broker="memory://",
        backend="cache+memory://",
        set_as_current=False,
    )
    app.conf.update(
        task_always_eager=True,
        task_eager_propagates=propagates,
        durable_redis_url=NO_REDIS,
        durable_key_prefix=f"compat-eager-{uuid.uuid4().hex[:8]}",
    )
    STORES[app.main] = MemoryStore()
    register(app, STORES[app.main])
    return app


@dataclass
class Eager:
    """One variant's view of an eager app: its tasks, each call with a tag of its own."""

    app: Celery
    variant: str

    def task(self, name: str) -> Any:
        return self.app.tasks[f"{self.variant}.{name}"]

    def tag(self) -> dict[str, str]:
        return {"tag": f"{self.variant}-{uuid.uuid4().hex[:8]}"}

    def s(self, name: str, *args: Any) -> Any:
        return self.task(name).s(*args, **self.tag())

    def runs(self, tag: dict[str, str], step: str) -> int:
        """How many times ``step`` ran for the call with ``tag``."""
        return STORES[self.app.main].counts[tag["tag"], step]


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[bool, Celery]]:
    """Two eager apps: one that propagates errors to the caller, one that does not."""
    made = {propagates: eager_app(propagates) for propagates in (True, False)}
    yield made
    for app in made.values():
        release_runtime(app)
        app.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del made
        gc.collect()


def outcome(call: Callable[[], Any]) -> list[Any]:
    """What the caller sees: the value, or what the exception is an instance of and its
    message (no result backend rebuilds it here: it is the object the task raised)."""
    try:
        got = call()
    except Exception as exc:
        return ["error", describe_exc(exc)]
    return ["value", typed(got)]


def stored(result: Any) -> list[Any]:
    """What an EagerResult holds: its state, and its value or exception."""
    held = result.result
    if isinstance(held, BaseException):
        return [result.state, "error", describe_exc(held)]
    return [result.state, "value", typed(held)]


def raised(kind: str, message: str) -> dict[str, Any]:
    return {"is": [kind], "message": message}


@dataclass(frozen=True)
class EagerCase:
    id: str
    propagates: bool
    call: Callable[[Eager], list[Any]]
    expect: list[Any]


EAGER_CASES = [
    EagerCase(
        "apply-returns-the-value",
        True,
        lambda e: outcome(lambda: e.task("add").apply((1, 2), e.tag()).get()),
        ["value", typed(3)],
    ),
    EagerCase(
        "delay-returns-the-value",
        True,
        lambda e: outcome(lambda: e.task("add").delay(1, 2, **e.tag()).get()),
        ["value", typed(3)],
    ),
    EagerCase(
        "apply-raises-the-steps-value-error",
        True,
        lambda e: outcome(lambda: e.task("fail").apply(("boom",), e.tag())),
        ["error", raised("ValueError", "bad input ['boom']")],
    ),
    EagerCase(
        "delay-raises-the-steps-value-error",
        True,
        lambda e: outcome(lambda: e.task("fail").delay("boom", **e.tag())),
        ["error", raised("ValueError", "bad input ['boom']")],
    ),
    EagerCase(
        "without-propagation-the-result-holds-the-value-error",
        False,
        lambda e: stored(e.task("fail").delay("boom", **e.tag())),
        ["FAILURE", "error", raised("ValueError", "bad input ['boom']")],
    ),
    EagerCase(
        "without-propagation-a-success",
        False,
        lambda e: stored(e.task("add").apply((1, 2), e.tag())),
        ["SUCCESS", "value", typed(3)],
    ),
    EagerCase(
        "chain",
        True,
        lambda e: outcome(lambda: chain(e.s("add", 1, 2), e.s("add", 10)).apply_async().get()),
        ["value", typed(13)],
    ),
    # Retries run at once and recursively inside apply(), when errors do not propagate.
    EagerCase(
        "autoretry-recovers",
        False,
        lambda e: stored(e.task("flaky").apply((2,), e.tag())),
        ["SUCCESS", "value", typed("connected on attempt 3")],
    ),
    EagerCase(
        "autoretry-exhausted",
        False,
        lambda e: stored(e.task("flaky").apply((99,), e.tag())),
        ["FAILURE", "error", raised("ConnectionError", "attempt 3 refused")],
    ),
    EagerCase(
        "retry-with-new-args",
        False,
        lambda e: stored(e.task("retry_with_args").apply((1,), e.tag())),
        ["SUCCESS", "value", typed("x=2 final=True")],
    ),
    EagerCase(
        "retry-with-new-kwargs",
        False,
        lambda e: stored(e.task("retry_with_kwargs").apply((), {"x": 1, **e.tag()})),
        ["SUCCESS", "value", typed("x=2 final=True")],
    ),
    # Celery's retry idioms around a step: the step runs again.
    EagerCase(
        "retry-on-error-runs-the-step-again",
        False,
        lambda e: stored(e.task("fetch_retrying").apply((1,), e.tag())),
        ["SUCCESS", "value", typed("fetched on attempt 2")],
    ),
    EagerCase(
        "retry-on-error-until-max-retries",
        False,
        lambda e: stored(e.task("fetch_retrying").apply((99,), e.tag())),
        ["FAILURE", "error", raised("ConnectionError", "attempt 4 refused")],
    ),
    EagerCase(
        "retry-to-poll-a-step",
        False,
        lambda e: stored(e.task("poll").apply((3,), e.tag())),
        ["SUCCESS", "value", typed("done")],
    ),
    EagerCase(
        "chord-header-members-that-retry",
        False,
        lambda e: stored(
            chord([e.s("poll", 2), e.s("fetch_retrying", 1)], e.s("collect")).apply_async()
        ),
        ["SUCCESS", "value", typed(["done", "fetched on attempt 2"])],
    ),
    EagerCase(
        "replace-with-a-task",
        True,
        lambda e: outcome(lambda: e.task("replace_single").apply((1,), e.tag()).get()),
        ["value", typed(20)],
    ),
    EagerCase(
        "direct-call-returns-the-value",
        True,
        lambda e: outcome(lambda: e.task("add")(1, 2, **e.tag())),
        ["value", typed(3)],
    ),
    EagerCase(
        "direct-call-raises-the-steps-value-error",
        True,
        lambda e: outcome(lambda: e.task("fail")("boom", **e.tag())),
        ["error", raised("ValueError", "bad input ['boom']")],
    ),
]


@pytest.mark.parametrize("case", EAGER_CASES, ids=lambda c: c.id)
def test_eager_same_outcome_as_plain_celery(apps: dict[bool, Celery], case: EagerCase) -> None:
    got = {variant: case.call(Eager(apps[case.propagates], variant)) for variant in VARIANTS}
    assert got["plain"] == case.expect, (
        f"the PLAIN variant of {case.id} does not show what the case expects from Celery"
    )
    assert got["durable"] == got["plain"], f"DurableTask differs from plain Celery in {case.id}"


@pytest.mark.parametrize(
    ("name", "args", "before", "again", "value"),
    [
        ("fetch_retrying", (1,), "prepare", "fetch", "fetched on attempt 2"),
        ("poll", (3,), "submit", "check", "done"),
    ],
)
def test_eager_a_retry_runs_the_step_again_and_the_steps_before_it_once(
    apps: dict[bool, Celery], name: str, args: tuple[int], before: str, again: str, value: str
) -> None:
    ran: dict[str, tuple[int, int]] = {}
    for variant in VARIANTS:
        eager = Eager(apps[False], variant)
        tag = eager.tag()
        assert eager.task(name).apply(args, tag).get() == value
        ran[variant] = (eager.runs(tag, before), eager.runs(tag, again))
    retries = {"fetch": 1, "check": 2}[again]
    assert ran["plain"] == (1 + retries, 1 + retries)  # the whole body, every time
    assert ran["durable"] == (1, 1 + retries)  # the step before it replays


def test_eager_a_set_returned_from_the_body_is_refused_only_by_a_durable_task(
    apps: dict[bool, Celery],
) -> None:
    """Eager Celery never serialises a result, so a plain task returns the set; a worker
    would fail it with EncodeError. A DurableTask journals its result in eager mode too,
    so it fails as it would on a worker (test_compat: a-set-returned-from-the-body)."""
    plain = Eager(apps[False], "plain").task("unstorable").apply((), {"tag": "plain-set"})
    assert (plain.state, plain.result) == ("SUCCESS", {1})
    durable = Eager(apps[False], "durable").task("unstorable").apply((), {"tag": "durable-set"})
    assert durable.state == "FAILURE"
    assert describe_exc(durable.result)["is"] == ["EncodeError"]  # type: ignore[index]
    assert "returned a set that its codec cannot store" in str(durable.result)


def test_a_steps_retry_runs_in_apply_even_when_errors_propagate(
    apps: dict[bool, Celery],
) -> None:
    """A difference on purpose: when errors propagate, Celery raises an eager retry's
    ``Retry`` to the caller and nothing runs it; a durable step's retry (its policy, here
    Celery's autoretry) runs inside ``apply()``, at once, replaying what came before."""
    app = apps[True]
    plain, durable = Eager(app, "plain"), Eager(app, "durable")
    assert outcome(lambda: plain.task("flaky").apply((2,), plain.tag())) == [
        "error", raised("Retry", "Retry in 0s: ConnectionError('attempt 1 refused')"),
    ]  # fmt: skip
    assert outcome(lambda: durable.task("flaky").apply((2,), durable.tag()).get()) == [
        "value", typed("connected on attempt 3"),
    ]  # fmt: skip
