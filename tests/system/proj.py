"""The Celery app of the worker subprocesses: ``celery -A tests.system.proj worker``.

Configured from environment variables (see ``harness``). The durable task records every
run of a step, every random value it draws and every delivery in Redis, and blocks
where the test asks, so that the test can SIGKILL the worker at a known point.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from typing import Any, Literal

import redis
from celery import signals

from celery_durable import DurableTask, RetryPolicy, StepInterruptedError, TerminalError
from tests.processes import die_with_test_process
from tests.system import harness

REDIS_URL = os.environ.get(harness.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get(harness.ENV_PREFIX, "sys-unset")
QUEUE = os.environ.get(harness.ENV_QUEUE, f"{PREFIX}-q")
VISIBILITY = float(os.environ.get(harness.ENV_VISIBILITY, "2"))
BROKER = os.environ.get(harness.ENV_BROKER, harness.REDIS)
#: The workers' durable_recovery_after; "none" turns recovery off.
RECOVERY_AFTER = os.environ.get(harness.ENV_RECOVERY_AFTER, "60")
#: "old=new,old2=new2": ask for step ``new`` where the code used to ask for ``old``.
RENAMES = dict(
    pair.split("=", 1) for pair in os.environ.get(harness.ENV_RENAME, "").split(",") if pair
)
#: The task's Celery retry options, which give its steps' default retry policy. A worker
#: that dies inside a step counts as a failed attempt of it, retried after this delay.
MAX_RETRIES = int(os.environ.get(harness.ENV_MAX_RETRIES, "4"))
RETRY_DELAY = float(os.environ.get(harness.ENV_RETRY_DELAY, "0"))
#: A blocked step gives up after this long, in case nobody kills the worker.
BLOCK_SECONDS = 300

app = harness.make_app(
    REDIS_URL,
    PREFIX,
    QUEUE,
    VISIBILITY,
    BROKER,
    None if RECOVERY_AFTER == "none" else float(RECOVERY_AFTER),
)
rec = harness.Records(PREFIX)
r = redis.Redis.from_url(REDIS_URL, decode_responses=True)


def _wait_for_release(key: str) -> None:
    if r.blpop([key], timeout=BLOCK_SECONDS) is None:
        raise RuntimeError(f"nobody released {key} within {BLOCK_SECONDS}s")


def _enter(task_id: str, name: str) -> int:
    """Count a run of step ``name``, note its process, maybe block; return the run number."""
    pipe = r.pipeline(transaction=True)
    pipe.delete(rec.block(task_id, name))
    pipe.incr(rec.runs(task_id, name))
    pipe.rpush(rec.pids(task_id, name), os.getpid())
    blocked, run, _ = pipe.execute()
    if blocked:
        _wait_for_release(rec.release(task_id, name, run))
    return int(run)


def do_step(task_id: str, name: str, order: str, index: int) -> dict[str, Any]:
    """A step with a side effect: count the run, note the process, maybe block."""
    _enter(task_id, name)
    return {
        "index": index,
        "order": order,
        "amount": 10 * (index + 1),
        "pid": os.getpid(),
        # Different on every run: a replayed step must hand back the journaled one.
        "token": uuid.uuid4().hex,
    }


@app.task(
    base=DurableTask,
    bind=True,
    name=harness.PIPELINE,
    max_retries=MAX_RETRIES,
    default_retry_delay=RETRY_DELAY,
)
def pipeline(self: DurableTask, order: str, n_steps: int) -> dict[str, Any]:
    task_id = self.request.id
    execution = r.incr(rec.bodies(task_id))
    draws: list[str] = []

    def draw(value: object) -> None:
        draws.append(str(value))
        r.rpush(rec.draws(task_id, execution), str(value))

    ctx = self.ctx
    draw(ctx.rand.uuid4())  # journal position 0
    steps = []
    for index in range(n_steps):
        name = harness.step_name(index)
        name = RENAMES.get(name, name)
        steps.append(ctx.run(name, do_step, task_id, name, order, index))
        draw(ctx.rand.uint64())  # journal position index + 1
    return {
        "order": order,
        "steps": steps,
        "draws": draws,
        "total": sum(step["amount"] for step in steps),
    }


#: Seconds before the second attempt of the flaky step, unless the test says otherwise.
#: Long enough for a test to kill the worker that holds the retried message before its
#: ETA comes.
FLAKY_COUNTDOWN = 4.0


def fail_first(task_id: str, name: str) -> dict[str, Any]:
    """A step whose first run raises; later runs succeed, and block if the test asks."""
    pipe = r.pipeline(transaction=True)
    pipe.incr(rec.runs(task_id, name))
    pipe.rpush(rec.pids(task_id, name), os.getpid())
    run = int(pipe.execute()[0])
    if run == 1:
        raise ValueError(f"{name} fails its first attempt")
    if r.delete(rec.block(task_id, name)):
        _wait_for_release(rec.release(task_id, name, run))
    return {"name": name, "run": run, "pid": os.getpid(), "token": uuid.uuid4().hex}


@app.task(base=DurableTask, bind=True, name=harness.FLAKY)
def flaky(
    self: DurableTask,
    order: str,
    countdown: float = FLAKY_COUNTDOWN,
    max_attempts: int = 3,
    at_most_once: bool = False,
    on_exhausted: Literal["fail", "pause"] = "fail",
) -> dict[str, Any]:
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    ctx = self.ctx
    steps = [ctx.run(f"prep-{i}", do_step, task_id, f"prep-{i}", order, i) for i in range(2)]
    policy = RetryPolicy(
        max_attempts=max_attempts,
        initial_interval=countdown,
        factor=1,
        on_exhausted=on_exhausted,
    )
    steps.append(
        ctx.run("flaky", fail_first, task_id, "flaky", retry=policy, at_most_once=at_most_once)
    )
    return {"order": order, "steps": steps}


def kill_own_process(task_id: str, name: str) -> None:
    """A step that SIGKILLs the process it runs in, every time."""
    _enter(task_id, name)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the process was killed")


# max_retries=2: three attempts per step. The delay of an hour would show if a worker's
# death were retried after the policy's delay instead of at once on redelivery.
@app.task(
    base=DurableTask, bind=True, name=harness.CRASH_LOOP, max_retries=2, default_retry_delay=3600
)
def crash_loop(self: DurableTask, order: str) -> dict[str, Any]:
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    ctx = self.ctx
    first = ctx.run("step-0", do_step, task_id, "step-0", order, 0)
    ctx.run("crash", kill_own_process, task_id, "crash")
    last = ctx.run("after", do_step, task_id, "after", order, 2)
    return {"order": order, "steps": [first, last]}


@app.task(
    base=DurableTask,
    bind=True,
    name=harness.AT_MOST_ONCE,
    durable_retry=RetryPolicy(max_attempts=3, initial_interval=3600),
)
def at_most_once(self: DurableTask, order: str, catch: bool = True) -> dict[str, Any]:
    """Pay at most once; with ``catch``, a failed payment is refunded instead of failing."""
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    ctx = self.ctx
    first = ctx.run("step-0", do_step, task_id, "step-0", order, 0)
    try:
        paid = ctx.run("pay", do_step, task_id, "pay", order, 1, at_most_once=True)
    except TerminalError as exc:
        if not catch:
            raise
        caught = {
            "class": type(exc).__name__,
            "interrupted": isinstance(exc, StepInterruptedError),
            "error_type": exc.error_type,
            "attempts": exc.attempts,
            "message": exc.message,
            "pid": os.getpid(),
        }
        r.rpush(rec.caught(task_id), json.dumps(caught))
        refund = ctx.run("refund", do_step, task_id, "refund", order, 2)
        return {"order": order, "steps": [first], "paid": None, "refund": refund}
    return {"order": order, "steps": [first], "paid": paid, "refund": None}


#: Raise the record of the most bodies at once to ARGV[1] if it is higher.
_RAISE_MAX = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""


def slow_step(task_id: str, name: str, order: str, index: int, duration: float) -> dict[str, Any]:
    """A step that takes ``duration`` seconds (the work itself, not a synchronisation)."""
    value = do_step(task_id, name, order, index)
    time.sleep(duration)
    return value


@app.task(base=DurableTask, bind=True, name=harness.OVERLAP)
def overlap(
    self: DurableTask, order: str, duration: float, at_most_once: bool = False
) -> dict[str, Any]:
    """Three steps, the middle one ``duration`` seconds long; counts bodies running at once."""
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    now = r.incr(rec.active(task_id))
    r.eval(_RAISE_MAX, 1, rec.max_active(task_id), now)
    try:
        ctx = self.ctx
        first = ctx.run("first", do_step, task_id, "first", order, 0)
        long = ctx.run(
            "long", slow_step, task_id, "long", order, 1, duration, at_most_once=at_most_once
        )
        last = ctx.run("last", do_step, task_id, "last", order, 2)
    finally:
        r.decr(rec.active(task_id))
    steps = [first, long, last]
    return {"order": order, "steps": steps, "total": sum(s["amount"] for s in steps)}


#: The task's own retry options: two deaths outside any step are all it may take.
DIE_MAX_RETRIES = 1


@app.task(
    base=DurableTask,
    bind=True,
    name=harness.DIE_OUTSIDE_STEPS,
    max_retries=DIE_MAX_RETRIES,
    default_retry_delay=3600,
)
def die_outside_steps(self: DurableTask, order: str, n_steps: int) -> dict[str, Any]:
    """Run ``n_steps`` steps (maybe none), then SIGKILL the process, outside any step."""
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    steps = [
        self.ctx.run(f"step-{i}", do_step, task_id, f"step-{i}", order, i) for i in range(n_steps)
    ]
    r.rpush(rec.kills(task_id), os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
    return {"order": order, "steps": steps}  # unreachable: the process was killed


#: Celery's own retries of the body: two, then the task fails with the step's error.
RETRY_IDIOM_MAX_RETRIES = 2


@app.task(
    base=DurableTask,
    bind=True,
    name=harness.RETRY_IDIOM,
    max_retries=RETRY_IDIOM_MAX_RETRIES,
    default_retry_delay=0,
)
def retry_idiom(self: DurableTask, order: str) -> dict[str, Any]:
    """``raise self.retry(exc=exc)`` when the step ``fetch`` fails (its first run does).

    ``before-retry`` counts the body's decisions to retry, and blocks where the test
    asks: after the failure is journaled, before the retry re-opens it.
    """
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    ctx = self.ctx
    prepared = ctx.run("prepare", do_step, task_id, "prepare", order, 0)
    try:
        fetched = ctx.run("fetch", fail_first, task_id, "fetch")
    except ValueError as exc:
        _enter(task_id, "before-retry")
        raise self.retry(exc=exc) from None
    return {"order": order, "prepare": prepared, "fetch": fetched}


@signals.before_task_publish.connect
def _hold_a_retry(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Count each retry message of ``retry_idiom`` as it is published (after the release
    that re-opens the step), and block there where the test asks."""
    if headers and headers.get("task") == harness.RETRY_IDIOM and headers.get("retries"):
        _enter(headers["id"], "publish")


@app.task(base=DurableTask, bind=True, name=harness.SLEEPER)
def sleeper(self: DurableTask, order: str, seconds: float) -> dict[str, Any]:
    """A step, a durable sleep of ``seconds`` (suspended meanwhile), another step."""
    task_id = self.request.id
    r.incr(rec.bodies(task_id))
    ctx = self.ctx
    first = ctx.run("before", do_step, task_id, "before", order, 0)
    ctx.sleep(seconds)
    last = ctx.run("after", do_step, task_id, "after", order, 1)
    return {"order": order, "steps": [first, last]}


def _ours(task: Any) -> bool:
    return getattr(task, "name", "").startswith("system.")


@signals.task_prerun.connect
def _count_delivery(task_id: str, task: Any, **_: Any) -> None:
    if _ours(task):
        r.incr(rec.deliveries(task_id))


@signals.task_received.connect
def _record_receipt(request: Any, **_: Any) -> None:
    if request.name.startswith("system."):
        receipt = {"pid": os.getpid(), "eta": request.eta and str(request.eta)}
        r.rpush(rec.receipts(request.id), json.dumps(receipt))


@signals.task_postrun.connect
def _record_outcome(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
    if not _ours(task):
        return
    record: dict[str, Any] = {
        "state": state,
        "pid": os.getpid(),
        "retries": task.request.retries,
    }
    if isinstance(retval, BaseException):
        record.update(type=type(retval).__name__, message=str(retval))
    else:
        record["value"] = retval
    r.rpush(rec.outcomes(task_id), json.dumps(record, default=repr))
    # The result is in the backend and the journal by now; the late ack is still to come.
    if r.delete(rec.hold_after(task_id)):
        _wait_for_release(rec.hold_release(task_id))


die_with_test_process()
