"""The Celery app of the cluster tests' workers: ``celery -A tests.cluster.proj worker``.

Configured from environment variables (``names``). Every run of a step, every body
execution and every delivery's outcome is recorded in the Redis at 6379, outside the
journal (which is on the cluster); a step blocks where the test asks.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import redis
from celery import signals

from celery_durable import DurableTask, RetryPolicy
from tests.cluster import names
from tests.processes import die_with_test_process

REDIS_URL = os.environ.get(names.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")
JOURNAL_URL = os.environ.get(names.ENV_JOURNAL_URL, "redis://127.0.0.1:7000/0")
PREFIX = os.environ.get(names.ENV_PREFIX, "cl-unset")
QUEUE = os.environ.get(names.ENV_QUEUE, f"{PREFIX}-q")
VISIBILITY = float(os.environ.get(names.ENV_VISIBILITY, "2"))
#: A blocked step gives up after this long, in case nobody releases or kills it.
BLOCK_SECONDS = 120

app = names.make_app(REDIS_URL, JOURNAL_URL, PREFIX, QUEUE, VISIBILITY)
rec = names.Records(PREFIX)
r = redis.Redis.from_url(REDIS_URL, decode_responses=True)


def _wait_for_release(key: str) -> None:
    # Short BLPOPs: redis-py's default socket timeout (5 s) is shorter than a wait.
    deadline = time.monotonic() + BLOCK_SECONDS
    while r.blpop([key], timeout=1) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody released {key} within {BLOCK_SECONDS}s")


def do_step(task_id: str, name: str, index: int) -> dict[str, Any]:
    """A step with a side effect: count the run, note its process, maybe block."""
    pipe = r.pipeline(transaction=True)
    pipe.delete(rec.block(task_id, name))
    pipe.incr(rec.runs(task_id, name))
    pipe.rpush(rec.pids(task_id, name), os.getpid())
    blocked, run, _ = pipe.execute()
    if blocked:
        _wait_for_release(rec.release(task_id, name))
    # Different on every run: a replayed step hands back the journaled one.
    return {"index": index, "run": int(run), "pid": os.getpid(), "token": uuid.uuid4().hex}


def _body(task_id: str) -> None:
    r.rpush(rec.bodies(task_id), repr(time.time()))


@app.task(base=DurableTask, bind=True, name=names.PIPELINE, max_retries=4, default_retry_delay=0)
def pipeline(self: DurableTask, order: str, n_steps: int) -> dict[str, Any]:
    task_id = self.request.id
    _body(task_id)
    steps = [self.ctx.run(f"step-{i}", do_step, task_id, f"step-{i}", i) for i in range(n_steps)]
    return {"order": order, "steps": steps}


def fail_first(task_id: str, name: str) -> dict[str, Any]:
    """A step whose first run raises; later runs succeed."""
    value = do_step(task_id, name, 2)
    if value["run"] == 1:
        raise ValueError(f"{name} fails its first attempt")
    return value


@app.task(base=DurableTask, bind=True, name=names.FLAKY)
def flaky(self: DurableTask, order: str, interval: float) -> dict[str, Any]:
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    steps = [ctx.run(f"prep-{i}", do_step, task_id, f"prep-{i}", i) for i in range(2)]
    policy = RetryPolicy(max_attempts=3, initial_interval=interval, factor=1)
    steps.append(ctx.run("flaky", fail_first, task_id, "flaky", retry=policy))
    return {"order": order, "steps": steps}


_RAISE_MAX = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""


def slow_step(task_id: str, name: str, index: int, duration: float) -> dict[str, Any]:
    """A step that takes ``duration`` seconds (the work itself, not a synchronisation)."""
    value = do_step(task_id, name, index)
    time.sleep(duration)
    return value


@app.task(base=DurableTask, bind=True, name=names.OVERLAP)
def overlap(self: DurableTask, order: str, duration: float) -> dict[str, Any]:
    """Three steps, the middle one ``duration`` seconds long; counts bodies at once."""
    task_id = self.request.id
    _body(task_id)
    r.eval(_RAISE_MAX, 1, rec.max_active(task_id), r.incr(rec.active(task_id)))
    try:
        ctx = self.ctx
        first = ctx.run("first", do_step, task_id, "first", 0)
        long = ctx.run("long", slow_step, task_id, "long", 1, duration)
        last = ctx.run("last", do_step, task_id, "last", 2)
    finally:
        r.decr(rec.active(task_id))
    return {"order": order, "steps": [first, long, last]}


@app.task(base=DurableTask, bind=True, name=names.NAP)
def nap(self: DurableTask, seconds: float) -> str:
    task_id = self.request.id
    _body(task_id)
    ctx = self.ctx
    ctx.run("before", do_step, task_id, "before", 0)
    ctx.sleep(seconds, "nap")
    ctx.run("after", do_step, task_id, "after", 2)
    return "rested"


@app.task(base=DurableTask, bind=True, name=names.KEYED, durable_concurrency_key="account")
def keyed(self: DurableTask, account: str, duration: float) -> str:
    """One at a time per account: a step, a sleep (the slot is held through it), a step."""
    task_id = self.request.id
    started = self.ctx.run("started", time.time)  # journaled: the same on every replay
    self.ctx.run("first", slow_step, task_id, "first", 0, duration)
    self.ctx.sleep(0.1, "between")
    self.ctx.run("last", slow_step, task_id, "last", 1, duration)
    r.rpush(rec.spans(account), json.dumps([task_id, started, time.time()]))
    return account


@app.task(base=DurableTask, bind=True, name=names.DEADLINED, durable_timeout=1.5)
def deadlined(self: DurableTask, seconds: float) -> str:
    self.ctx.sleep(seconds, "nap")
    return "rested"


def _ours(task: Any) -> bool:
    return getattr(task, "name", "").startswith("cluster.")


@signals.task_postrun.connect
def _record_outcome(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
    if not _ours(task):
        return
    record: dict[str, Any] = {"state": state, "pid": os.getpid(), "retries": task.request.retries}
    if isinstance(retval, BaseException):
        record.update(type=type(retval).__name__, message=str(retval))
    else:
        record["value"] = retval
    r.rpush(rec.outcomes(task_id), json.dumps(record, default=repr))


die_with_test_process()
