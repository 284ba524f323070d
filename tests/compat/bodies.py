"""Task bodies written once, registered twice: ``plain.<name>`` and ``durable.<name>``.

A body takes a ``Body`` first. ``body.run(name, fn, *args)`` calls ``fn`` directly in the
plain variant and runs it as the step ``name`` (``self.ctx.run``) in the durable one, so
the durable variant does all of its work inside steps and raises from inside a step
wherever the plain one raises. ``body.sig(name, ...)`` is a signature of a task of the
same variant, for canvases built inside a task (``Task.replace``).

Every task under test takes a keyword argument ``tag`` that the body never sees: the
worker files what it observes under it (see ``harness``).

All tasks get ``default_retry_delay=0`` unless ``BODIES`` says otherwise. A plain task never
retries on its own, so this changes nothing for it; a durable variant that retries where
the plain one fails then shows its final outcome within the case's timeout instead of
three minutes later.
"""

from __future__ import annotations

import datetime
import decimal
import operator
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from celery import Celery, Task, chord, group
from celery.canvas import Signature
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from celery_durable import DurableTask
from tests.compat.harness import CompatError


class Store(Protocol):
    """Where step functions count their runs: Redis in the worker, a dict in eager tests."""

    def count(self, tag: str, step: str) -> int:
        """Count one run of ``step`` for ``tag``; return how many there were so far."""

    def is_unacked(self, task_id: str) -> bool:
        """Whether the broker holds a message of ``task_id`` as taken and not acknowledged."""


class Body:
    """What a body uses instead of ``self``: steps, signatures, the task and its tag."""

    def __init__(self, task: Task, variant: str, tag: str | None, store: Store) -> None:
        self.task = task
        self.variant = variant
        self.tag = tag
        self.store = store

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.variant == "durable":
            return self.task.ctx.run(name, fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def sig(self, name: str, *args: Any, **kwargs: Any) -> Signature:
        return self.task.app.signature(
            f"{self.variant}.{name}", args=args, kwargs={**kwargs, "tag": self.tag}
        )

    def count(self, step: str) -> int:
        """A step function's side effect: count a run of ``step``."""
        return self.store.count(str(self.tag), step)


# -- Step functions --------------------------------------------------------------------


def _sum(values: list[int]) -> int:
    return sum(values)


def _raise_value_error(*args: Any) -> None:
    raise ValueError(f"bad input {list(args)!r}")


def _raise(kind: str) -> None:
    if kind == "key":
        raise KeyError("missing-key")
    if kind == "multi":
        raise ValueError("two args", 2)
    if kind == "custom":
        raise CompatError("a failure of the project's own")
    if kind == "runtime":
        raise RuntimeError("a runtime error")
    raise AssertionError(f"unknown kind {kind}")


def _describe(x: Any, final: Any) -> str:
    return f"x={x} final={final}"


def sample(kind: str) -> Any:
    """A value of a type that Celery's json serializer (kombu's JSON) round-trips."""
    return {
        "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
        "naive-datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
        "date": datetime.date(2024, 5, 6),
        "time": datetime.time(7, 8, 9, 123456),
        "decimal": decimal.Decimal("12.3450"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "bytes": b"utf-8 bytes",
        "binary-bytes": b"\x00\xff\xfe binary",
        "tuple": (1, "two", 3.0),
    }[kind]


# -- Bodies ----------------------------------------------------------------------------


def add(t: Body, x: int, y: int) -> int:
    return t.run("add", operator.add, x, y)  # type: ignore[no-any-return]


def mul(t: Body, x: int, y: int) -> int:
    return t.run("mul", operator.mul, x, y)  # type: ignore[no-any-return]


def xsum(t: Body, values: list[int]) -> int:
    return t.run("sum", _sum, values)  # type: ignore[no-any-return]


def fail(t: Body, *args: Any) -> None:
    """Raise ValueError naming the arguments (a chain link gets the previous value)."""
    t.run("fail", _raise_value_error, *args)


def fail_as(t: Body, kind: str) -> None:
    """Raise an exception of another kind from a step (see ``_raise``)."""
    t.run("fail", _raise, kind)


def fail_in_body(t: Body, x: int) -> None:
    """Raise from the body itself, outside any step, after a step."""
    y = t.run("add", operator.add, x, 1)
    raise ValueError(f"body failed after {y}")


def nothing(t: Body) -> None:
    t.run("nothing", lambda: None)


def _ignore() -> None:
    raise Ignore()


def _reject() -> None:
    raise Reject("rejected from a step", requeue=False)


def ignore_in_step(t: Body) -> None:
    """Celery's own control flow, raised inside a step."""
    t.run("ignore", _ignore)


def reject_in_step(t: Body) -> None:
    t.run("reject", _reject)


def retry_in_step(t: Body) -> str:
    """``self.retry()`` raised inside a step function, once."""

    def decide(task: Task) -> str:
        if task.request.retries < 1:
            raise task.retry(countdown=0)
        return f"decided after {task.request.retries} retries"

    return t.run("decide", decide, t.task)  # type: ignore[no-any-return]


def flaky(t: Body, fails: int) -> str:
    """Refuse the connection ``fails`` times, then connect."""

    def connect() -> str:
        attempt = t.count("connect")
        if attempt <= fails:
            raise ConnectionError(f"attempt {attempt} refused")
        return f"connected on attempt {attempt}"

    return t.run("connect", connect)  # type: ignore[no-any-return]


def retry_with_args(t: Body, x: int, final: bool = False) -> str:
    """Retry once with new positional arguments, then work with them."""
    if not final:
        raise t.task.retry(args=[x + 1, True], countdown=0)
    return t.run("finish", _describe, x, final)  # type: ignore[no-any-return]


def retry_with_kwargs(t: Body, x: int = 0, final: bool = False) -> str:
    """Retry once with new keyword arguments, then work with them."""
    if not final:
        kwargs = {**t.task.request.kwargs, "x": x + 1, "final": True}
        raise t.task.retry(kwargs=kwargs, countdown=0)
    return t.run("finish", _describe, x, final)  # type: ignore[no-any-return]


def retry_twice(t: Body) -> str:
    """``self.retry()`` twice, then report the retry count Celery gives the body."""
    retries = t.task.request.retries
    if retries < 2:
        raise t.task.retry(countdown=0)
    return t.run("done", lambda n: f"done after {n} retries", retries)  # type: ignore[no-any-return]


def retry_exhausted(t: Body) -> None:
    """``self.retry(exc=..., max_retries=1)`` every time: the exc is raised in the end."""
    missing = t.run("look", lambda: "still-missing")
    raise t.task.retry(exc=KeyError(missing), countdown=0, max_retries=1)


def replace_single(t: Body, x: int) -> Any:
    base = t.run("prepare", operator.add, x, 1)
    return t.task.replace(t.sig("mul", base, 10))


def replace_chain(t: Body, x: int) -> Any:
    base = t.run("prepare", operator.add, x, 1)
    return t.task.replace(t.sig("add", base, 1) | t.sig("mul", 10))


def replace_group(t: Body, x: int) -> Any:
    base = t.run("prepare", operator.add, x, 1)
    return t.task.replace(group([t.sig("add", base, i) for i in range(3)]))


def replace_chord(t: Body, x: int) -> Any:
    base = t.run("prepare", operator.add, x, 1)
    return t.task.replace(chord([t.sig("add", base, i) for i in range(3)], t.sig("xsum")))


def soft_limited(t: Body, seconds: float) -> str:
    """Catch the soft time limit around a step that sleeps past it."""
    try:
        t.run("sleep", time.sleep, seconds)
    except SoftTimeLimitExceeded:
        return "soft-caught"
    return "slept"


def hard_limited(t: Body, seconds: float) -> str:
    t.run("sleep", time.sleep, seconds)
    return "slept"


def make_value(t: Body, kind: str) -> list[Any]:
    """A json-serializable value from a step, its type as the body sees it, and one made
    in the body."""
    value = t.run("make", sample, kind)
    return [value, type(value).__name__, sample(kind)]


def delivery(t: Body) -> dict[str, Any]:
    info = t.task.request.delivery_info or {}
    return t.run("read", dict, priority=info.get("priority"))  # type: ignore[no-any-return]


def counted(t: Body, x: int) -> dict[str, Any]:
    """Count the runs of its one step; return the argument."""
    return t.run("work", lambda: {"x": x, "run": t.count("work")})  # type: ignore[no-any-return]


def step_then_retry(t: Body) -> dict[str, Any]:
    """Two steps, then ``self.retry()`` once, then another step."""
    first = t.run("first", t.count, "first")
    before = t.run("before", t.count, "before")
    if t.task.request.retries < 1:
        raise t.task.retry(countdown=0)
    after = t.run("after", t.count, "after")
    return {"first": first, "before": before, "after": after, "retries": t.task.request.retries}


def fetch_retrying(t: Body, fails: int) -> str:
    """Celery's retry on error: a step's ConnectionError caught, ``self.retry(exc=exc)``.

    ``prepare`` before it counts its runs: once for a DurableTask, once per delivery for
    a plain task.
    """
    t.run("prepare", t.count, "prepare")

    def fetch() -> str:
        attempt = t.count("fetch")
        if attempt <= fails:
            raise ConnectionError(f"attempt {attempt} refused")
        return f"fetched on attempt {attempt}"

    try:
        return t.run("fetch", fetch)  # type: ignore[no-any-return]
    except ConnectionError as exc:
        raise t.task.retry(exc=exc) from None


def poll(t: Body, ready_on: int) -> str:
    """Celery's polling: ``self.retry()`` while a step's check reports "pending"."""
    t.run("submit", t.count, "submit")

    def check() -> str:
        return "done" if t.count("check") >= ready_on else "pending"

    status: str = t.run("check", check)
    if status != "done":
        raise t.task.retry()
    return status


def collect(t: Body, values: list[Any]) -> list[Any]:
    return t.run("collect", list, values)  # type: ignore[no-any-return]


def unstorable(t: Body) -> set[int]:
    """Return a set: Celery's json serializer cannot store it (one member: a stable repr)."""
    return set(t.run("members", list, [1]))


def acked_yet(t: Body) -> dict[str, Any]:
    """Whether the message of this delivery is acknowledged while the body runs.

    A plain task's message is acked when the pool takes the task, which the body may
    outrun: give that a second.
    """

    def acked(task_id: str) -> bool:
        deadline = time.monotonic() + 1.0
        while t.store.is_unacked(task_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    return {"acked_while_running": t.run("check", acked, t.task.request.id)}


#: name -> (body, task options). Options apply to both variants alike.
BODIES: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "add": (add, {}),
    "mul": (mul, {}),
    "xsum": (xsum, {}),
    "fail": (fail, {}),
    "fail_as": (fail_as, {}),
    "fail_autoretry": (fail, {"autoretry_for": (ConnectionError,), "max_retries": 2}),
    "fail_autoretry_all": (fail, {"autoretry_for": (Exception,), "max_retries": 2}),
    "fail_dont_autoretry": (
        fail,
        {"autoretry_for": (Exception,), "dont_autoretry_for": (ValueError,), "max_retries": 2},
    ),
    "fail_in_body": (fail_in_body, {}),
    "nothing": (nothing, {}),
    "ignore_in_step": (ignore_in_step, {}),
    "reject_in_step": (reject_in_step, {}),
    "retry_in_step": (retry_in_step, {}),
    "flaky": (flaky, {"autoretry_for": (ConnectionError,), "max_retries": 2}),
    # countdown from retry_kwargs, while Celery's default_retry_delay stays 180 s.
    "flaky_retry_kwargs": (
        flaky,
        {
            "autoretry_for": (ConnectionError,),
            "retry_kwargs": {"max_retries": 2, "countdown": 0},
            "default_retry_delay": 180,
        },
    ),
    # One retry, after retry_backoff's first delay: 1 s.
    "flaky_backoff": (
        flaky,
        {
            "autoretry_for": (ConnectionError,),
            "max_retries": 1,
            "retry_backoff": True,
            "retry_jitter": False,
        },
    ),
    "retry_with_args": (retry_with_args, {}),
    "retry_with_kwargs": (retry_with_kwargs, {}),
    "retry_twice": (retry_twice, {}),
    "retry_exhausted": (retry_exhausted, {}),
    "replace_single": (replace_single, {}),
    "replace_chain": (replace_chain, {}),
    "replace_group": (replace_group, {}),
    "replace_chord": (replace_chord, {}),
    "soft_limited": (soft_limited, {"soft_time_limit": 1}),
    "soft_uncaught": (hard_limited, {"soft_time_limit": 1}),
    "hard_limited": (hard_limited, {"time_limit": 1}),
    "make_value": (make_value, {}),
    "delivery": (delivery, {}),
    "counted": (counted, {}),
    "step_then_retry": (step_then_retry, {}),
    "acked_yet": (acked_yet, {}),
    "fetch_retrying": (fetch_retrying, {"max_retries": 3}),
    "poll": (poll, {"max_retries": 5}),
    "collect": (collect, {}),
    "unstorable": (unstorable, {}),
}

DEFAULT_OPTIONS: dict[str, Any] = {"default_retry_delay": 0}


def register(app: Celery, store: Store) -> None:
    """Register ``plain.<name>`` and ``durable.<name>`` for every body on ``app``."""
    for name, (body, options) in BODIES.items():
        for variant, base in (("plain", Task), ("durable", DurableTask)):
            _register(app, store, name, body, variant, base, {**DEFAULT_OPTIONS, **options})


def _register(
    app: Celery,
    store: Store,
    name: str,
    body: Callable[..., Any],
    variant: str,
    base: type[Task],
    options: dict[str, Any],
) -> None:
    def run(self: Task, *args: Any, tag: str | None = None, **kwargs: Any) -> Any:
        return body(Body(self, variant, tag, store), *args, **kwargs)

    run.__name__ = run.__qualname__ = f"{variant}_{name}"
    run.__doc__ = body.__doc__
    app.task(name=f"{variant}.{name}", base=base, bind=True, shared=False, **options)(run)
