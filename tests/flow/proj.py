"""The Celery app of the flow-control tests' workers: ``celery -A tests.flow.proj``.

Configured from environment variables (``names``). Every step run is recorded in Redis
outside the journal, and a step waits to be killed where the test asks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis

import celery_durable.concurrency
from celery_durable import DurableTask, InvocationCancelled, TerminalError
from tests.flow import names
from tests.processes import die_with_test_process

PREFIX = os.environ.get(names.ENV_PREFIX, "fl-unset")
QUEUE = os.environ.get(names.ENV_QUEUE, f"{PREFIX}-q")
#: A step that waits to be killed gives up after this long.
BLOCK_SECONDS = 120

app = names.make_app(PREFIX, QUEUE)
rec = names.Records(PREFIX)
r = redis.Redis.from_url(names.REDIS_URL, decode_responses=True)


def step(task_id: str, name: str) -> str:
    r.incr(rec.runs(task_id, name))
    return name


def keyed_step(task_id: str, key: str, name: str, seconds: float) -> str:
    started = time.time()
    r.incr(rec.runs(task_id, name))
    time.sleep(seconds)
    r.rpush(rec.spans(key), json.dumps([task_id, name, started, time.time()]))
    return name


def wait_to_be_killed(task_id: str, name: str) -> None:
    r.incr(rec.runs(task_id, name))
    r.rpush(rec.entered(task_id, name), os.getpid())
    r.blpop([rec.entered(task_id, name) + ":never"], timeout=BLOCK_SECONDS)
    raise RuntimeError(f"{name} of {task_id} was never killed")


@app.task(base=DurableTask, bind=True, name=names.SAGA)
def saga(self: DurableTask, order: str) -> str:
    """Reserve, ship (a child that sleeps), wait a day; undo on a TerminalError."""
    ctx, task_id = self.ctx, self.request.id
    ctx.run("reserve", step, task_id, "reserve")
    shipping = ctx.call(ship.s(order), name="ship")
    try:
        ctx.sleep(86400, "a day")
        shipping.result()
    except TerminalError:
        ctx.run("refund", step, task_id, "refund")
        raise
    return "delivered"


@app.task(base=DurableTask, bind=True, name=names.SHIP)
def ship(self: DurableTask, order: str) -> str:
    ctx, task_id = self.ctx, self.request.id
    ctx.run("book", step, task_id, "book")
    try:
        ctx.sleep(86400, "transit")
    except InvocationCancelled:
        ctx.run("unbook", step, task_id, "unbook")
        raise
    return "shipped"


@app.task(base=DurableTask, bind=True, name=names.NAP, durable_timeout=2.0)
def nap(self: DurableTask) -> str:
    ctx, task_id = self.ctx, self.request.id
    ctx.run("before", step, task_id, "before")
    try:
        ctx.sleep(86400, "nap")
    except InvocationCancelled:
        ctx.run("cleanup", step, task_id, "cleanup")
        raise
    return "rested"


@app.task(base=DurableTask, bind=True, name=names.TRANSFER, durable_concurrency_key="account")
def transfer(self: DurableTask, account: str, seconds: float) -> str:
    """Two steps under the account's key, with a sleep between (the slot is held through it)."""
    ctx, task_id = self.ctx, self.request.id
    ctx.run("debit", keyed_step, task_id, account, "debit", seconds)
    ctx.sleep(0.1, "settle")
    ctx.run("credit", keyed_step, task_id, account, "credit", seconds)
    return account


@app.task(base=DurableTask, bind=True, name=names.HOLD, durable_concurrency_key="account")
def hold(self: DurableTask, account: str, seconds: float) -> str:
    """Holds the account's slot for a step of ``seconds``; the first run of that step waits
    to be killed if the test set its block flag."""
    ctx, task_id = self.ctx, self.request.id
    ctx.run("work", blocking_step, task_id, account, seconds)
    return account


def blocking_step(task_id: str, key: str, seconds: float) -> str:
    if r.delete(rec.block(task_id)):
        wait_to_be_killed(task_id, "work")
    return keyed_step(task_id, key, "work", seconds)


def _die(where: str, task_id: str) -> None:
    r.rpush(rec.died(), json.dumps({"where": where, "task_id": task_id, "pid": os.getpid()}))
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get(names.ENV_DIE_AT) == "give-back":
    _give_back = celery_durable.concurrency.give_back

    def _dying_give_back(app: Any, store: Any, task_id: str, key: str, limit: int) -> None:
        if key:  # the invocation finished; its slot is not given back yet
            _die("give-back", task_id)
        _give_back(app, store, task_id, key, limit)

    celery_durable.concurrency.give_back = _dying_give_back

if os.environ.get(names.ENV_DIE_AT) == "grant":
    _hand_on = celery_durable.concurrency.hand_on

    def _dying_hand_on(app: Any, store: Any, key: str, limit: int, granted: Any) -> None:
        if granted:  # handed over in the key's slot; the waiter not told in its own
            _die("grant", granted[0][0])
        _hand_on(app, store, key, limit, granted)

    celery_durable.concurrency.hand_on = _dying_hand_on


die_with_test_process()
