"""The Celery app of the outage tests' worker subprocesses.

``celery -A tests.outage.proj worker``: broker, result backend and journal are ONE
private Redis (``ENV_SHARED_URL``), the default layout. Everything the test wants to
check or steer (step runs, blocks, one-shot triggers, task outcomes) lives in the main
Redis (``ENV_RECORDS_URL``) under the test's prefix, which never refuses writes.
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
from tests.outage.names import (
    BLOCK_SECONDS,
    ENV_PREFIX,
    ENV_RECORDS_URL,
    ENV_SHARED_URL,
    ENV_VISIBILITY,
    FLAKY,
    FLAKY_INTERVAL,
    PIPELINE,
    PIPELINE_ONE_ATTEMPT,
    Keys,
    library_constant,
    make_app,
    queue_of,
)
from tests.processes import die_with_test_process

SHARED_URL = os.environ.get(ENV_SHARED_URL, "redis://127.0.0.1:6390/0")
RECORDS_URL = os.environ.get(ENV_RECORDS_URL, "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get(ENV_PREFIX, "outage-unset")
QUEUE = queue_of(PREFIX)
ENDED_FENCE_HEADER: str = library_constant("ENDED_FENCE_HEADER")

app = make_app(SHARED_URL, PREFIX, float(os.environ.get(ENV_VISIBILITY, "60")))
#: The test's records, in the main Redis.
r = redis.Redis.from_url(RECORDS_URL, decode_responses=True)
#: The shared Redis, for the one-shot "refuse writes when publishing" trigger.
shared = redis.Redis.from_url(SHARED_URL, decode_responses=True)


keys = Keys(PREFIX)


def _wait(key: str) -> None:
    if r.blpop([key], timeout=BLOCK_SECONDS) is None:
        raise RuntimeError(f"nobody released {key} within {BLOCK_SECONDS}s")


def _enter(task_id: str, name: str) -> int:
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.block(task_id, name))
    pipe.incr(keys.runs(task_id, name))
    pipe.rpush(keys.entered(task_id, name), os.getpid())
    blocked, run, _ = pipe.execute()
    if blocked:
        _wait(keys.release(task_id, name))
    return int(run)


def do_step(task_id: str, name: str, order: str, index: int) -> dict[str, Any]:
    run = _enter(task_id, name)
    return {
        "index": index,
        "order": order,
        "amount": 10 * (index + 1),
        "run": run,
        "token": uuid.uuid4().hex,
    }


def fail_first(task_id: str, name: str) -> dict[str, Any]:
    run = _enter(task_id, name)
    if run == 1:
        raise ValueError(f"{name} fails its first attempt")
    return {"name": name, "run": run, "token": uuid.uuid4().hex}


def _three_steps(task: DurableTask, order: str) -> dict[str, Any]:
    task_id = task.request.id
    ctx = task.ctx
    steps = [ctx.run(f"step-{i}", do_step, task_id, f"step-{i}", order, i) for i in range(3)]
    return {"order": order, "steps": steps, "total": sum(s["amount"] for s in steps)}


@app.task(base=DurableTask, bind=True, name=PIPELINE, max_retries=4)
def pipeline(self: DurableTask, order: str) -> dict[str, Any]:
    return _three_steps(self, order)


@app.task(base=DurableTask, bind=True, name=PIPELINE_ONE_ATTEMPT, max_retries=0)
def pipeline_one_attempt(self: DurableTask, order: str) -> dict[str, Any]:
    return _three_steps(self, order)


@app.task(base=DurableTask, bind=True, name=FLAKY)
def flaky(self: DurableTask, order: str) -> dict[str, Any]:
    task_id = self.request.id
    ctx = self.ctx
    first = ctx.run("prep", do_step, task_id, "prep", order, 0)
    policy = RetryPolicy(max_attempts=3, initial_interval=FLAKY_INTERVAL, factor=1)
    second = ctx.run("flaky", fail_first, task_id, "flaky", retry=policy)
    last = ctx.run("last", do_step, task_id, "last", order, 2)
    return {"order": order, "steps": [first, second, last]}


def _ours(name: str) -> bool:
    return name.startswith("outage.")


@signals.before_task_publish.connect
def _refuse_writes_now(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Right before the worker publishes a message of a flagged task (its retry), make
    the shared Redis refuse writes: the publish that follows meets the outage."""
    headers = headers or {}
    task_id = str(headers.get("id") or "")
    flagged = bool(task_id) and _ours(str(headers.get("task", "")))
    if flagged and r.delete(keys.refuse_on_publish(task_id)):
        shared.config_set("maxmemory-policy", "noeviction")
        shared.config_set("maxmemory", 1)
        r.rpush(keys.refused(task_id), time.time())


@signals.task_received.connect
def _record_receipt(request: Any, **_: Any) -> None:
    if _ours(request.name):
        receipt = {
            "pid": os.getpid(),
            "eta": request.eta and str(request.eta),
            "retries": request.request_dict.get("retries", 0),
            "ended_fence": request.request_dict.get(ENDED_FENCE_HEADER),
            "redelivered": bool(request.delivery_info.get("redelivered")),
        }
        r.rpush(keys.receipts(request.id), json.dumps(receipt))


@signals.task_postrun.connect
def _record_outcome(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
    if not _ours(getattr(task, "name", "")):
        return
    record: dict[str, Any] = {"state": state, "pid": os.getpid(), "retries": task.request.retries}
    if isinstance(retval, BaseException):
        record.update(type=type(retval).__name__, message=str(retval))
    else:
        record["value"] = retval
    r.rpush(keys.outcomes(task_id), json.dumps(record, default=repr))


die_with_test_process()
