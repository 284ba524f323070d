"""The Celery app of the awaitables tests' workers: ``celery -A tests.awaitables.proj``.

Configured from environment variables (``names``). Every body execution, step run,
``any`` winner and message receipt is recorded in Redis outside the journal, and a
step or a publish blocks where the test asks, so that the test can SIGKILL the worker
at a known point.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis
from celery import signals

import celery_durable.wakeups
from celery_durable import DurableTask, TerminalError
from tests.awaitables import names
from tests.processes import die_with_test_process

REDIS_URL = os.environ.get(names.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get(names.ENV_PREFIX, "aw-unset")
QUEUE = os.environ.get(names.ENV_QUEUE, f"{PREFIX}-q")
#: A blocked step or publish gives up after this long, in case nobody kills the worker.
BLOCK_SECONDS = 120

app = names.make_app(
    REDIS_URL,
    PREFIX,
    QUEUE,
    broker=os.environ.get(names.ENV_BROKER, names.REDIS),
    journal_url=os.environ.get(names.ENV_JOURNAL_URL, ""),
    split=os.environ.get(names.ENV_SPLIT) == "1",
)
rec = names.Records(PREFIX)
r = redis.Redis.from_url(REDIS_URL, decode_responses=True)


# -- What the bodies record --------------------------------------------------------------


def _body(task_id: str) -> None:
    """Note that an execution of the body started, and when."""
    r.rpush(rec.bodies(task_id), repr(time.time()))


def _wait_to_be_killed(task_id: str, what: str) -> None:
    r.rpush(rec.entered(task_id, what), os.getpid())
    # Nobody pushes to this key: the test kills the worker meanwhile.
    r.blpop([rec.entered(task_id, what) + ":never"], timeout=BLOCK_SECONDS)
    raise RuntimeError(f"{what} of {task_id} was blocked and nobody killed the worker")


def step(task_id: str, name: str, seconds: float = 0.0) -> dict[str, Any]:
    """A step with a side effect: count the run, note its span, maybe block."""
    started = time.time()
    pipe = r.pipeline(transaction=True)
    pipe.delete(rec.block(task_id, name))
    pipe.incr(rec.runs(task_id, name))
    blocked, run = pipe.execute()
    if blocked:
        _wait_to_be_killed(task_id, name)
    if seconds:
        time.sleep(seconds)
    r.rpush(rec.spans(task_id, name), json.dumps([started, time.time()]))
    return {"name": name, "run": int(run), "pid": os.getpid()}


def hand_out(task_id: str, step_name: str, name: str, awakeable_id: str) -> str:
    """The step that sends an awakeable id to whoever completes it (here: the test)."""
    step(task_id, step_name)
    r.hset(rec.awakeables(task_id), name, awakeable_id)
    return awakeable_id


def describe(value: Any) -> Any:
    """A value of ``all(settle=True)`` as JSON: errors by their types and message."""
    if not isinstance(value, BaseException):
        return value
    return {
        "terminal": isinstance(value, TerminalError),
        "key_error": isinstance(value, KeyError),
        "error_type": getattr(value, "error_type", type(value).__name__),
        "message": getattr(value, "message", str(value)),
    }


# -- Parents -----------------------------------------------------------------------------


@app.task(base=DurableTask, bind=True, name=names.RACE)
def race(self: DurableTask, deadline: float, linger: float) -> dict[str, Any]:
    """An awakeable against a timer; after the branch, a sleep that forces replays."""
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    awakeable_id, approval = ctx.awakeable("approval")
    ctx.run("ask", hand_out, task_id, "ask", "approval", awakeable_id)
    winner = ctx.any(approval, ctx.timer(deadline, "deadline")).result()
    r.rpush(rec.branches(task_id), winner)
    ctx.run(f"branch-{winner}", step, task_id, f"branch-{winner}")
    ctx.sleep(linger, "linger")
    return {"winner": winner}


@app.task(base=DurableTask, bind=True, name=names.FIRST_OK)
def first_ok(self: DurableTask, count: int) -> dict[str, Any]:
    """The first awakeable to succeed, skipping the ones that were rejected.

    ``ctx.any`` completes with the first future to complete, failed or not (a race),
    so "first successful" is a loop: take the winner, and if it failed, race the rest.
    """
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    futures = []
    for i in range(count):
        awakeable_id, future = ctx.awakeable(f"offer-{i}")
        ctx.run(f"ask-{i}", hand_out, task_id, f"ask-{i}", f"offer-{i}", awakeable_id)
        futures.append(future)
    pending = list(range(count))
    failures: list[list[Any]] = []
    while pending:
        won = ctx.any(*(futures[j] for j in pending), name=f"race-{len(failures)}").result()
        chosen = pending[won]
        r.rpush(rec.branches(task_id), chosen)
        try:
            value = futures[chosen].result()
        except TerminalError as exc:
            failures.append([chosen, exc.message])
            pending.remove(chosen)
            continue
        return {"winner": chosen, "value": value, "failures": failures}
    raise TerminalError(f"every offer was refused: {failures}")


@app.task(base=DurableTask, bind=True, name=names.GATHER)
def gather(self: DurableTask, fail: bool, settle: bool) -> list[Any]:
    """``all`` over a plain child, a durable child, an awakeable and a timer."""
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    awakeable_id, approval = ctx.awakeable("approval")
    ctx.run("ask", hand_out, task_id, "ask", "approval", awakeable_id)
    first = refuse.s(task_id) if fail else double.s(task_id, 21)
    futures = [
        ctx.call(first, name="first"),
        ctx.call(square.s(task_id, 5), name="square"),
        approval,
        ctx.timer(0.3, "pause"),
    ]
    values = ctx.all(*futures, settle=settle).result()
    return [describe(value) for value in values]


@app.task(base=DurableTask, bind=True, name=names.NAP)
def nap(self: DurableTask, seconds: float) -> str:
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    ctx.run("before", step, task_id, "before")
    ctx.sleep(seconds, "nap")
    ctx.run("after", step, task_id, "after")
    return "rested"


@app.task(base=DurableTask, bind=True, name=names.PARENT)
def parent(self: DurableTask, child: str, hold: bool) -> dict[str, Any]:
    """Start a child; with ``hold``, a step right after it that the test may block."""
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    ctx.run("prep", step, task_id, "prep")
    future = ctx.call(app.signature(child, args=(task_id,)), name="child")  # index 1
    if hold:
        ctx.run("hold", step, task_id, "hold")
    value = future.result()
    ctx.run("after", step, task_id, "after")
    return {"child": value}


@app.task(base=DurableTask, bind=True, name=names.FAN_OUT)
def fan_out(self: DurableTask, count: int, seconds: float) -> list[Any]:
    """``count`` steps of ``seconds`` each, concurrently; then a sleep that forces a replay."""
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    futures = [
        ctx.run_async(f"part-{i}", step, task_id, f"part-{i}", seconds) for i in range(count)
    ]
    values = ctx.all(*futures).result()
    ctx.sleep(0.3, "then")
    return [value["name"] for value in values]


@app.task(base=DurableTask, bind=True, name=names.OPS)
def ops(self: DurableTask, seconds: float) -> list[Any]:
    """One of each operation, for counting round trips (``measure``)."""
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    ctx.run("a", step, task_id, "a")
    awakeable_id, approval = ctx.awakeable("approval")
    ctx.run("ask", hand_out, task_id, "ask", "approval", awakeable_id)
    timer = ctx.timer(seconds, "t")
    child = ctx.call(double.s(task_id, 4), name="double")
    return ctx.all(approval, timer, child).result()


# -- Children ----------------------------------------------------------------------------


@app.task(name=names.DOUBLE)
def double(task_id: str, n: int) -> int:
    step(task_id, "double")
    return n * 2


@app.task(base=DurableTask, bind=True, name=names.SQUARE)
def square(self: DurableTask, task_id: str, n: int) -> int:
    self.ctx.run("square", step, task_id, "square")
    return n * n


@app.task(name=names.REFUSE)
def refuse(task_id: str) -> None:
    step(task_id, "refuse")
    raise KeyError("sku-9")


@app.task(name=names.PLAIN_CHILD)
def plain_child(task_id: str) -> dict[str, Any]:
    return step(task_id, "child")


@app.task(base=DurableTask, bind=True, name=names.DURABLE_CHILD)
def durable_child(self: DurableTask, task_id: str) -> dict[str, Any]:
    value: dict[str, Any] = self.ctx.run("child", step, task_id, "child")
    return value


@app.task(base=DurableTask, bind=True, name=names.NAPPING_CHILD)
def napping_child(self: DurableTask, task_id: str, seconds: float = 1.0) -> dict[str, Any]:
    """A child that suspends itself: its parent hears of it only when it is woken."""
    ctx = self.ctx
    ctx.run("child-before", step, task_id, "child-before")
    ctx.sleep(seconds, "child-nap")
    value: dict[str, Any] = ctx.run("child", step, task_id, "child")
    return value


# -- Hooks -------------------------------------------------------------------------------


@signals.task_received.connect
def _record_receipt(request: Any, **_: Any) -> None:
    if request.name.startswith("aw."):
        r.rpush(rec.receipts(request.id), os.getpid())


@signals.after_task_publish.connect
def _hold_after_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """The broker has the message; the publisher's next write (for a child: the marker
    that it was sent) has not happened. The test kills the worker here."""
    task_id = (headers or {}).get("id")
    if task_id and r.delete(rec.hold_publish(task_id)):
        _wait_to_be_killed(task_id, "publish")


if os.environ.get(names.ENV_CLAIM_VISIBILITY):
    celery_durable.wakeups.CLAIM_VISIBILITY = float(os.environ[names.ENV_CLAIM_VISIBILITY])

if os.environ.get(names.ENV_DIE_BEFORE_PUBLISH) == "1":

    def _die_before_publishing(app: Any, call: str) -> None:
        """Replaces ``wakeups.publish``: the wake-up is claimed, and never published."""
        task_id = json.loads(call)["options"]["task_id"]
        r.rpush(rec.dead_claimers(), json.dumps({"pid": os.getpid(), "task_id": task_id}))
        os.kill(os.getpid(), signal.SIGKILL)

    celery_durable.wakeups.publish = _die_before_publishing


die_with_test_process()
