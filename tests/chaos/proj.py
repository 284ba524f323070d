"""The Celery app of the chaos workers: ``celery -A tests.chaos.proj worker``.

Configured from environment variables (``harness``). The pipeline's steps record, in
the suite's Redis, every run of every step: when it started, in which process of which
worker, and how ``ctx.run`` ended in the body (returned, or raised what). While a
step is in flight its process has an ``inflight`` marker, so that the test can tell,
right after a kill, which steps the dead processes were inside.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import redis
from celery import signals
from celery.exceptions import Retry

from celery_durable import DurableContext, DurableTask
from tests.chaos import harness
from tests.processes import die_with_test_process

BROKER_URL = os.environ.get(harness.ENV_BROKER_URL, "redis://127.0.0.1:6379/0")
EVIDENCE_URL = os.environ.get(harness.ENV_EVIDENCE_URL, "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get(harness.ENV_PREFIX, "chaos-unset")
INCARNATION = os.environ.get(harness.ENV_INCARNATION, "unset")

app = harness.make_app(BROKER_URL, PREFIX)
ev = harness.Evidence(PREFIX)
r = redis.Redis.from_url(EVIDENCE_URL, decode_responses=True)
_sleep = random.Random(os.urandom(8))

# Atomic, so that a kill cannot leave a counted run without its in-flight marker.
_ENTER = r.register_script(
    """
    local run = redis.call('INCR', KEYS[1])
    redis.call('RPUSH', KEYS[2], cjson.encode({ev='enter', run=run, inc=ARGV[1],
                                               pid=tonumber(ARGV[2]), t=ARGV[3]}))
    redis.call('HSET', KEYS[3], ARGV[2], ARGV[4] .. '|' .. run .. '|' .. ARGV[3])
    return run
    """
)
_EXIT = r.register_script(
    """
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('RPUSH', KEYS[1], cjson.encode({ev='exit', run=tonumber(ARGV[1]),
                                               pid=tonumber(ARGV[2]), outcome=ARGV[3],
                                               t=ARGV[4]}))
    """
)

#: The run number of the step function that ran inside the current ``ctx.run`` call
#: of this process, if one did (a replayed step runs nothing).
_ran: dict[tuple[str, int], int] = {}


def do_step(task_id: str, order: str, index: int) -> dict[str, Any]:
    """A step with a side effect: count the run, mark it in flight, take a while."""
    pid = os.getpid()
    run = _ENTER(
        keys=[ev.runs(task_id, index), ev.log(task_id, index), ev.inflight(INCARNATION)],
        args=[INCARNATION, pid, f"{time.time():.6f}", f"{task_id}|{index}"],
    )
    _ran[(task_id, index)] = int(run)
    time.sleep(_sleep.uniform(*harness.STEP_SLEEP))
    return harness.step_value(order, index)


def run_step(ctx: DurableContext, task_id: str, order: str, index: int) -> Any:
    """``ctx.run`` of step ``index``; then note how it ended if it ran here."""
    _ran.pop((task_id, index), None)
    outcome = "ok"
    try:
        return ctx.run(harness.step_name(index), do_step, task_id, order, index)
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        run = _ran.pop((task_id, index), None)
        if run is not None:
            _EXIT(
                keys=[ev.log(task_id, index), ev.inflight(INCARNATION)],
                args=[run, os.getpid(), outcome, f"{time.time():.6f}"],
            )


@app.task(  # type: ignore[untyped-decorator]
    base=DurableTask, bind=True, name=harness.TASK, max_retries=harness.MAX_RETRIES
)
def pipeline(self: DurableTask, order: str, n_steps: int) -> dict[str, Any]:
    task_id = self.request.id
    execution = r.incr(ev.bodies(task_id))
    ctx = self.ctx
    draws: list[str] = []

    def draw() -> None:
        draws.append(str(ctx.rand.uint64()))  # journal position len(draws)
        r.rpush(ev.draws(task_id, execution), draws[-1])

    steps = []
    for index in range(n_steps):
        draw()
        steps.append(run_step(ctx, task_id, order, index))
    draw()
    return {"order": order, "steps": steps, "draws": draws}


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _record_outcome(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
    if getattr(task, "name", "") != harness.TASK:
        return
    record: dict[str, Any] = {"state": state, "pid": os.getpid(), "inc": INCARNATION}
    if isinstance(retval, Retry):
        record["why"] = type(retval.exc).__name__ if retval.exc is not None else ""
    elif isinstance(retval, BaseException):
        record.update(type=type(retval).__name__, message=str(retval)[:300])
    r.rpush(ev.outcomes(task_id), json.dumps(record))


die_with_test_process()
