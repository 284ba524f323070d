"""The Celery app of the compat worker: ``celery -A tests.compat.proj worker``.

Configured from environment variables (see ``harness``). It registers every body of
``bodies`` twice (``plain.*`` and ``durable.*``), the callback and errback tasks the
cases link (plain Celery tasks in both variants: they are the observers), and signal
handlers that record ``task_success``, ``task_failure``, ``task_retry`` and
``task_postrun`` of the tasks under test in Redis, under the task's ``tag``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import signals
from celery.result import AsyncResult

from tests.compat import bodies, harness
from tests.processes import die_with_test_process

REDIS_URL = os.environ.get(harness.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get(harness.ENV_PREFIX, "compat-unset")
QUEUE = os.environ.get(harness.ENV_QUEUE, f"{PREFIX}-q")

app = harness.make_app(REDIS_URL, PREFIX, QUEUE)
keys = harness.Keys(PREFIX)
r = redis.Redis.from_url(REDIS_URL, decode_responses=True)


class RedisStore:
    def count(self, tag: str, step: str) -> int:
        return int(r.incr(keys.runs(tag, step)))

    def is_unacked(self, task_id: str) -> bool:
        # Each value is kombu's JSON of [message, exchange, routing key].
        for raw in r.hvals(keys.unacked()):
            message = json.loads(raw)[0]
            if message.get("headers", {}).get("id") == task_id:
                return True
        return False


bodies.register(app, RedisStore())


def _record(key: str, record: dict[str, Any]) -> None:
    r.rpush(key, json.dumps(record, sort_keys=True))


# -- Callbacks and errbacks: plain tasks, the same in both variants ---------------------


@app.task(name="compat.on_success", shared=False)
def on_success(value: Any, *, tag: str, label: str) -> None:
    _record(keys.callbacks(tag), {"cb": label, "value": harness.typed(value)})


@app.task(name="compat.errback_new", shared=False)
def errback_new(request: Any, exc: BaseException, traceback: Any, *, tag: str, label: str) -> None:
    """New style: called in the worker with the failed task's request and exception."""
    _record(
        keys.callbacks(tag),
        {
            "cb": label,
            "task": harness.short_name(request.task or ""),
            "task_id": request.id,
            "exc": harness.describe_exc(exc),
        },
    )


@app.task(name="compat.errback_old", shared=False)
def errback_old(task_id: str, *, tag: str, label: str) -> None:
    """Old style: a task sent with the failed task's id; it reads the stored result.

    A chord's errbacks are sent before the chord's failure is stored, so wait for it.
    """
    result = AsyncResult(task_id, app=app)
    deadline = time.monotonic() + 3
    while not result.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    error = result.result if isinstance(result.result, BaseException) else None
    _record(
        keys.callbacks(tag),
        {
            "cb": label,
            "task_id": task_id,
            "state": result.state,
            "stored": None if error is None else harness.without_ids(f"{error!r}"),
            "stored_type": None if error is None else harness.qualified(type(error)),
        },
    )


# -- Signals of the tasks under test ---------------------------------------------------


def _tag(kwargs: Any) -> str | None:
    tag = (kwargs or {}).get("tag") if isinstance(kwargs, dict) else None
    return tag if isinstance(tag, str) else None


def _under_test(name: str | None) -> bool:
    return harness.short_name(name or "") != (name or "")


@signals.task_success.connect
def _on_success(sender: Any, result: Any, **_: Any) -> None:
    tag = _tag(sender.request.kwargs)
    if tag and _under_test(sender.name):
        record = {"signal": "success", "task": harness.short_name(sender.name)}
        _record(keys.signals(tag), {**record, "result": harness.typed(result)})


@signals.task_failure.connect
def _on_failure(sender: Any, exception: BaseException, kwargs: Any = None, **_: Any) -> None:
    tag = _tag(kwargs)
    if tag and _under_test(sender.name):
        record = {"signal": "failure", "task": harness.short_name(sender.name)}
        _record(keys.signals(tag), {**record, "exc": harness.describe_exc(exception)})


@signals.task_retry.connect
def _on_retry(sender: Any, request: Any, reason: Any, **_: Any) -> None:
    tag = _tag(request.kwargs)
    if tag and _under_test(sender.name):
        exc = getattr(reason, "exc", None)
        record = {"signal": "retry", "task": harness.short_name(sender.name)}
        _record(keys.signals(tag), {**record, "exc": harness.describe_exc(exc)})


@signals.task_postrun.connect
def _on_postrun(sender: Any, task_id: str, state: str, kwargs: Any = None, **_: Any) -> None:
    tag = _tag(kwargs)
    if tag and _under_test(getattr(sender, "name", None)):
        record = {"task": harness.short_name(sender.name), "task_id": task_id, "state": state}
        _record(keys.postruns(tag), record)


die_with_test_process()
