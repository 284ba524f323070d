"""Async steps commit in journal order, and nothing waits for an entry that never comes.

Each test would hang without its guard: the per-test timeout (pytest-timeout) is what
fails it then, so each body also runs under a short watchdog of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.codec import JsonCodec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import CodecError, ContextError, LeaseLost, StepRetry
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.entries import parse
from celery_durable.journal.store import StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.stores.memory import MemoryJournalStore

CODEC = JsonCodec[Any]()
#: Far more than any of these bodies takes, far less than pytest's own timeout.
WATCHDOG = 20.0


def start(store: MemoryJournalStore, task_id: str = "inv-1") -> Execution:
    request = StartRequest("shop.checkout", fingerprint((), {}), 7, 30.0, "test:1")
    started = invocation.begin(store, task_id, request, CODEC, RetryPolicy(), retention=60)
    assert isinstance(started, Execution)
    return started


def run(store: MemoryJournalStore, body: Callable[[DurableContext], Any]) -> Any:
    """Start an execution, run ``body`` and drain, in a thread of its own; fail (instead
    of hanging) past the watchdog."""
    box: dict[str, Any] = {}

    def target() -> None:
        ex = start(store)
        try:
            box["value"] = body(DurableContext(ex))
        except BaseException as exc:
            box["error"] = exc
        finally:
            ex.drain()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WATCHDOG)
    assert not thread.is_alive(), f"the body hung for {WATCHDOG}s (a commit waits for ever)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def names(store: MemoryJournalStore, task_id: str = "inv-1") -> list[str]:
    return [parse(entry)["n"] for entry in store.journals[task_id]]


def test_two_async_steps_that_return_at_once_are_journaled_in_order() -> None:
    for _ in range(200):
        store = MemoryJournalStore()
        values = run(
            store, lambda ctx: ctx.all(ctx.run_async("a", int), ctx.run_async("b", str)).result()
        )
        assert values == [0, ""]
        assert names(store) == ["a", "b", "all"]


class SlowStore(MemoryJournalStore):
    """A memory store whose appends take as long as a round trip to a distant Redis."""

    def append(self, task_id: str, fence: int, index: int, entry: str, ends: bool) -> str | None:
        time.sleep(0.02)
        return super().append(task_id, fence, index, entry, ends)


def test_async_steps_that_return_at_once_on_a_slow_store_are_journaled_in_order() -> None:
    # The first step's thread may reach its commit before the body has finished
    # submitting it; its commit must still wake the second step's, which waits for it.
    for _ in range(20):
        store = SlowStore()
        values = run(
            store, lambda ctx: ctx.all(ctx.run_async("a", int), ctx.run_async("b", str)).result()
        )
        assert values == [0, ""]
        assert names(store) == ["a", "b", "all"]


def test_a_step_whose_value_cannot_be_stored_stops_the_commits_after_it() -> None:
    store = MemoryJournalStore()
    ran: list[str] = []

    def body(ctx: DurableContext) -> None:
        ctx.run_async("bad", object)  # the json codec cannot store an object()
        ctx.run("after", ran.append, "after")  # its entry would come after the bad one

    with pytest.raises(CodecError, match=r"async step 'bad' \(index 0\)"):
        run(store, body)
    assert ran == ["after"]  # the step ran; its entry could not be journaled
    assert store.journals["inv-1"] == []


def test_a_failed_async_step_stops_later_async_steps_and_all_ends() -> None:
    store = MemoryJournalStore()

    def misuse() -> None:
        raise ContextError("a durable operation inside a step")

    def body(ctx: DurableContext) -> Any:
        slow = ctx.run_async("slow", time.sleep, 0.2)
        bad = ctx.run_async("bad", misuse)
        later = ctx.run_async("later", int)
        return ctx.all(slow, bad, later).result()

    with pytest.raises(ContextError, match="inside a step"):
        run(store, body)
    assert names(store) == ["slow"]  # the step before the failed one kept its entry


def test_a_later_failure_does_not_stop_an_earlier_step_that_waits() -> None:
    store = MemoryJournalStore()
    release = threading.Event()

    def held() -> str:
        assert release.wait(5)
        return "first"

    def waits_for_bad() -> str:
        return "second"

    def bad() -> None:
        try:
            raise ContextError("misused")
        finally:
            release.set()

    def body(ctx: DurableContext) -> Any:
        first = ctx.run_async("first", held)
        second = ctx.run_async("second", waits_for_bad)
        failed = ctx.run_async("bad", bad)
        return ctx.all(first, second, failed, settle=True).result()

    with pytest.raises(ContextError):
        run(store, body)
    assert names(store) == ["first", "second"]


def test_a_lost_lease_in_an_async_step_stops_the_body_instead_of_hanging_it() -> None:
    store = MemoryJournalStore()
    other = threading.Event()

    def step() -> str:
        store.break_lease("inv-1", "test:1")
        start(store)  # another execution takes the lease: this one's writes are refused
        other.set()
        return "a"

    def body(ctx: DurableContext) -> None:
        ctx.run_async("a", step)
        assert other.wait(5)
        ctx.run("b", int)

    with pytest.raises(LeaseLost):
        run(store, body)


def test_a_step_retry_waits_for_the_async_steps_before_it_releases_the_lease() -> None:
    store = MemoryJournalStore()

    def slow() -> str:
        time.sleep(0.3)
        return "slow"

    def flaky() -> None:
        raise ConnectionError("down")

    released: list[list[str]] = []

    def body(ctx: DurableContext) -> None:
        ctx.run_async("slow", slow)
        try:
            ctx.run("flaky", flaky, retry=RetryPolicy(max_attempts=3, initial_interval=1))
        except StepRetry:
            assert "lease" not in store.meta["inv-1"]
            released.append(names(store))
            raise

    with pytest.raises(StepRetry):
        run(store, body)
    # Once the lease is released, the next delivery may start at once: the async step
    # that ran under this lease is journaled by then, not run a second time there.
    assert released == [["slow"]]
