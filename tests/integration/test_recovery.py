"""What the recovery sweep relies on, written by real executions: when a retry is due,
and the call that publishes the invocation again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery

from celery_durable import CodecError, DurableTask, get_invocation
from celery_durable.fingerprint import fingerprint
from celery_durable.wakeups import decode_call

TIMEOUT = 30


def wait_for_due(redis_client: redis.Redis, meta_key: str) -> dict[str, str]:
    deadline = time.monotonic() + TIMEOUT
    while "due" not in (meta := dict(redis_client.hgetall(meta_key))):
        assert time.monotonic() < deadline, f"no retry was recorded in {meta_key}"
        time.sleep(0.05)
    # The call has a key of its own (InvocationKeys.call), beside the meta hash.
    assert "call" not in meta
    meta["call"] = redis_client.get(meta_key.removesuffix(":meta") + ":call")
    return meta


@pytest.mark.parametrize("when", ["countdown", "eta"])
def test_a_body_retry_records_when_it_is_due_and_its_new_arguments_call(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str, when: str
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def later(self: DurableTask, order: str) -> str:
        self.ctx.run("a", lambda: order)
        if when == "eta":
            raise self.retry(args=[f"{order}-b"], eta=datetime.now(UTC) + timedelta(seconds=40))
        raise self.retry(args=[f"{order}-b"], countdown=40)

    # The retry waits as an ETA task in the worker; the test reads what was recorded.
    with worker():
        result = later.delay("o-1")
        meta = wait_for_due(redis_client, f"{key_prefix}:{{{result.id}}}:meta")
    due_in = int(meta["due"]) / 1000 - time.time()
    assert 30 < due_in <= 40.5, f"due in {due_in:.1f} s"
    assert (meta["status"], "lease" in meta) == ("running", False)
    # The stored call and fingerprint follow the new arguments together, so that a
    # recovery publishes what the next start accepts.
    call = decode_call(meta["call"])
    assert (call["task"], call["args"], call["options"]["task_id"]) == (
        later.name,
        ["o-1-b"],
        result.id,
    )
    assert meta["fingerprint"] == fingerprint(("o-1-b",), {})


def test_a_plain_body_retry_keeps_the_call_stored_at_creation(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    @app.task(base=DurableTask, bind=True, shared=False)
    def later(self: DurableTask, order: str) -> str:
        self.ctx.run("a", lambda: order)
        raise self.retry(countdown=40)

    with worker():
        result = later.delay("o-2")
        meta = wait_for_due(redis_client, f"{key_prefix}:{{{result.id}}}:meta")
    assert 30 < int(meta["due"]) / 1000 - time.time() <= 40.5
    call = decode_call(meta["call"])
    assert (call["args"], call["options"]["retries"]) == (["o-2"], 0)
    assert meta["fingerprint"] == fingerprint(("o-2",), {})


def test_arguments_that_json_cannot_hold_are_refused_before_anything_runs(app: Celery) -> None:
    # A message serialized by pickle can carry a set; the stored call cannot.
    runs: list[int] = []

    @app.task(base=DurableTask, bind=True, shared=False)
    def tagged(self: DurableTask, tags: set[str]) -> int:
        return int(self.ctx.run("count", lambda: runs.append(1) or len(tags)))

    result = tagged.apply(({"a", "b"},))
    with pytest.raises(CodecError, match=r"stored as JSON.*set is not JSON serializable"):
        result.get()
    assert runs == []
    assert get_invocation(app, result.id) is None
