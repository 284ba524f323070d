"""Nothing leaks: after an invocation ends, whichever way, every key of it expires.

One in-thread worker runs invocations that end every way an invocation can end; then
the test walks every key under its prefix (SCAN) and checks each TTL.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any

import redis
from celery import Celery

from celery_durable import (
    DurableTask,
    RetryPolicy,
    forget_invocation,
    get_invocation,
    resume_invocation,
)
from celery_durable.errors import LeaseLost
from celery_durable.runtime import runtime_for
from tests.processes import wait_for

TIMEOUT = 30
PAUSING = RetryPolicy(max_attempts=1, on_exhausted="pause")


def _status(app: Celery, task_id: str, status: str) -> bool:
    inv = get_invocation(app, task_id)
    return inv is not None and inv.status == status


def test_every_key_of_an_invocation_that_ended_expires(
    app: Celery, worker: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    broken = threading.Event()
    broken.set()
    entered, proceed = threading.Event(), threading.Event()

    def charge() -> str:
        if broken.is_set():
            raise ConnectionError("the bank is down")
        return "charged"

    def wait_for_the_test() -> str:
        entered.set()
        proceed.wait(TIMEOUT)
        return "late"

    @app.task(base=DurableTask, bind=True, shared=False)
    def child(self: DurableTask, n: int) -> int:
        return int(self.ctx.run("double", lambda: n * 2))

    @app.task(base=DurableTask, bind=True, shared=False)
    def completes(self: DurableTask) -> int:
        ctx = self.ctx
        ctx.run("first", lambda: 1)
        ctx.sleep(0.2)  # suspended, woken: a wake-up and the running/suspended indexes
        return int(ctx.call(child.s(21)).result())  # a child: the completions hash

    @app.task(base=DurableTask, bind=True, shared=False)
    def fails(self: DurableTask) -> None:
        self.ctx.run("first", lambda: 1)
        self.ctx.run("boom", lambda: {}["missing"])

    @app.task(base=DurableTask, bind=True, shared=False)
    def revoked(self: DurableTask) -> None:
        self.ctx.run("first", lambda: 1)
        self.ctx.run("second", lambda: 2)  # the retry re-opens it; "first" stays
        raise self.retry(countdown=3)  # waits as an ETA task, and is revoked meanwhile

    @app.task(base=DurableTask, bind=True, shared=False)
    def replaced(self: DurableTask) -> Any:
        self.ctx.run("first", lambda: 1)
        raise self.replace(child.s(1))

    @app.task(base=DurableTask, bind=True, shared=False)
    def pauses(self: DurableTask) -> str:
        self.ctx.run("first", lambda: 1)
        return str(self.ctx.run("charge", charge, retry=PAUSING))

    @app.task(base=DurableTask, bind=True, shared=False, durable_journal_retention=0)
    def steps_dropped(self: DurableTask) -> int:
        ctx = self.ctx
        ctx.run("first", lambda: 1)
        ctx.sleep(0.2)  # it has a call, a wake-up, and a completions hash to drop
        return int(ctx.call(child.s(2)).result())

    @app.task(base=DurableTask, bind=True, shared=False, durable_journal_retention=25)
    def steps_kept_less(self: DurableTask) -> int:
        return int(self.ctx.run("first", lambda: 7))

    @app.task(base=DurableTask, bind=True, shared=False)
    def forgotten(self: DurableTask) -> str:
        self.ctx.run("first", lambda: 1)
        return str(self.ctx.run("slow", wait_for_the_test))

    with worker():  # one execution at a time (solo): the forgotten one goes last
        ended = {
            "completed": completes.delay(),
            "failed": fails.delay(),
            "cancelled": revoked.delay(),
            "replaced": replaced.delay(),
            "resumed-completed": pauses.delay(),
            "steps-dropped": steps_dropped.delay(),
            "steps-kept-less": steps_kept_less.delay(),
        }
        ids = {how: result.id for how, result in ended.items()}
        assert ended["completed"].get(timeout=TIMEOUT) == 42
        assert ended["replaced"].get(timeout=TIMEOUT) == 2
        assert ended["steps-dropped"].get(timeout=TIMEOUT) == 4
        assert ended["steps-kept-less"].get(timeout=TIMEOUT) == 7

        wait_for(lambda: _status(app, ids["cancelled"], "running"), "the retry to be due")
        app.control.revoke(ids["cancelled"])

        wait_for(lambda: _status(app, ids["resumed-completed"], "paused"), "the pause")
        broken.clear()  # the cause is fixed
        resume_invocation(app, ids["resumed-completed"])

        for how, status in (("failed", "failed"), ("cancelled", "cancelled"),
                            ("resumed-completed", "completed")):  # fmt: skip
            wait_for(lambda: _status(app, ids[how], status), f"{how} to be {status}")  # noqa: B023

        ended["forgotten"] = forgotten.delay()
        ids["forgotten"] = ended["forgotten"].id
        assert entered.wait(TIMEOUT)
        assert forget_invocation(app, ids["forgotten"])  # while its step runs
        proceed.set()  # the step returns; its write is refused, and it stops
        barrier = child.delay(0)  # the solo worker takes it once the forgotten one ended
        assert barrier.get(timeout=TIMEOUT) == 0
        forget_invocation(app, barrier.id)
        assert ended["forgotten"].state == "PENDING"  # Ignore: no state is written

    assert get_invocation(app, ids["forgotten"]) is None
    # A late write of an execution that still holds a finished invocation's fence (an
    # async step, a child noted as sent after the finish) is refused, and makes nothing.
    store = runtime_for(app).store
    late: list[str] = []
    for how in ("completed", "failed", "replaced", "resumed-completed"):
        meta, _, _ = store.read(ids[how]) or ({}, [], {})
        with contextlib.suppress(LeaseLost):
            store.mark_sent(ids[how], int(meta["fence"]), 99)
            late.append(how)

    # The children: one of "completes" (its own id) and the replacement of "replaced".
    children = [f"{ids['completed']}/2", f"{ids['steps-dropped']}/2"]
    keys = list(redis_client.scan_iter(f"{key_prefix}:*", count=1000))
    by_invocation: dict[str, list[str]] = {}
    shared: list[str] = []
    for key in keys:
        tag = re.match(rf"{re.escape(key_prefix)}:\{{(.+?)\}}:", key)
        if tag is None:
            shared.append(key)
        else:
            by_invocation.setdefault(tag.group(1), []).append(key)

    no_ttl = [
        key for found in by_invocation.values() for key in found if redis_client.pttl(key) < 0
    ]
    assert no_ttl == [], "keys of invocations that ended, with no TTL"
    assert set(by_invocation) <= {*ids.values(), *children, barrier.id}, by_invocation
    # A completed invocation keeps its journal and call packed in one key (replaced ends
    # as its replacement, completed, under its id); one that may be resumed keeps them.
    for how in ("failed", "cancelled"):
        parts = {key.rpartition(":")[2] for key in by_invocation[ids[how]]}
        assert {"meta", "journal", "call"} <= parts, (how, parts)
        assert "steps" not in parts, (how, parts)
    for how in ("completed", "replaced", "resumed-completed"):
        parts = {key.rpartition(":")[2] for key in by_invocation[ids[how]]}
        assert {"meta", "steps"} <= parts, (how, parts)
        assert not {"journal", "call"} & parts, (how, parts)
    # The call lives as long as the steps, which a restart needs; the outcome outlives
    # them by as much as durable_journal_retention is shorter than durable_retention.
    for how, parts in (("completed", ("steps", "done")), ("failed", ("journal", "call"))):
        meta_key = f"{key_prefix}:{{{ids[how]}}}:meta"
        for part in parts:
            key = f"{key_prefix}:{{{ids[how]}}}:{part}"
            assert abs(redis_client.pttl(key) - redis_client.pttl(meta_key)) < 2000, part
    kept_less = {key.rpartition(":")[2]: key for key in by_invocation[ids["steps-kept-less"]]}
    assert set(kept_less) == {"meta", "steps"}, kept_less
    assert 0 < redis_client.pttl(kept_less["steps"]) <= 25_000
    assert redis_client.pttl(kept_less["meta"]) > 60_000
    # durable_journal_retention=0: only the outcome is left, at once.
    dropped = sorted(key.rpartition(":")[2] for key in by_invocation[ids["steps-dropped"]])
    assert dropped == ["meta"], dropped
    assert {key.rpartition(":")[2] for key in by_invocation[ids["completed"]]} >= {"done"}
    # The forgotten one left its tombstone only (its fence, for a later one of its id).
    assert [key.rpartition(":")[2] for key in by_invocation[ids["forgotten"]]] == ["tombstone"]
    # What is left without a TTL is shared by every invocation of the prefix, not theirs
    # (the sweep's turn, taken by the worker while it ran, expires by itself).
    assert {key.removeprefix(f"{key_prefix}:") for key in shared if redis_client.pttl(key) < 0} <= {
        "epoch",
        "index:all",
        "index:running",
        "index:suspended",
        "index:paused",
        "wakeups",
    }
    for index in ("running", "suspended", "paused"):
        assert not redis_client.zrange(f"{key_prefix}:index:{index}", 0, -1)
    assert not redis_client.zrange(f"{key_prefix}:wakeups", 0, -1)
    assert late == [], "a late write to a finished invocation was taken"
