"""A graceful cancel in the body, against the in-memory store: raised once, at the next
durable operation, journaled where, and raised at the same operation on every replay."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import InvocationCancelled, NonDeterminismError, TerminalError
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import CODEC, begin, execute


@pytest.fixture
def store() -> MemoryJournalStore:
    return MemoryJournalStore()


def started(store: MemoryJournalStore) -> Execution:
    ex = begin(store, lease_ttl=30.0)
    assert isinstance(ex, Execution), ex
    return ex


def finish(store: MemoryJournalStore, ex: Execution, body: Any) -> tuple[str, Any]:
    """Run ``body`` in ``ex`` to its end as DurableTask does: (status, value or error)."""
    try:
        value = body(DurableContext(ex))
    except Exception as exc:
        return invocation.fail(store, ex, exc, 60), exc
    finally:
        ex.close()
    return "completed", invocation.complete(store, ex, value, CODEC, 60)


def kinds(store: MemoryJournalStore) -> list[tuple[str, str]]:
    return [(e["k"], e["n"]) for e in map(__import__("json").loads, store.journals["inv-1"])]


def saga(runs: Counter[str], cancel_before: str = "") -> Any:
    """Reserve, charge, ship; on a TerminalError, refund and release what was done."""

    def body(ctx: DurableContext) -> Any:
        done = []
        try:
            for step in ("reserve", "charge", "ship"):
                if step == cancel_before:
                    ctx._ex.store.cancel(ctx.invocation_id, "the customer left")  # type: ignore[attr-defined]
                ctx.run(step, runs.update, [step])
                done.append(step)
        except TerminalError as exc:
            for step in reversed(done):
                ctx.run(f"undo-{step}", runs.update, [f"undo-{step}"])
            return {"cancelled": isinstance(exc, InvocationCancelled), "reason": str(exc)}
        return "shipped"

    return body


def test_a_running_body_raises_the_cancel_at_its_next_step_once_and_compensates(
    store: MemoryJournalStore,
) -> None:
    runs: Counter[str] = Counter()
    ex = started(store)
    status, value = finish(store, ex, saga(runs, cancel_before="charge"))
    # The cancel came before "charge": the execution heard of it from charge's write (no
    # round trip of its own), and raised it at the next step; "ship" never ran.
    assert status == "completed"
    assert value["cancelled"] is True
    assert "the customer left" in value["reason"]
    assert runs == {"reserve": 1, "charge": 1, "undo-charge": 1, "undo-reserve": 1}
    assert kinds(store) == [
        ("run", "reserve"), ("run", "charge"), ("cancel", "cancel"),
        ("run", "undo-charge"), ("run", "undo-reserve"),
    ]  # fmt: skip


def test_a_replay_raises_the_cancel_where_it_was_raised_and_runs_nothing_again(
    store: MemoryJournalStore,
) -> None:
    runs: Counter[str] = Counter()
    ex = started(store)
    store.cancel("inv-1", "stop")
    ctx = DurableContext(ex)
    ctx.run("reserve", runs.update, ["reserve"])  # heard of the cancel from this write
    with pytest.raises(InvocationCancelled):
        ctx.run("charge", runs.update, ["charge"])
    ctx.run("undo", runs.update, ["undo"])
    ex.close()
    store.release("inv-1", ex.fence)

    again = started(store)
    ctx = DurableContext(again)
    assert ctx.cancelled
    ctx.run("reserve", runs.update, ["reserve"])
    with pytest.raises(InvocationCancelled, match="stop"):
        ctx.run("charge", runs.update, ["charge"])
    ctx.run("undo", runs.update, ["undo"])
    # Raised once: nothing more raises, though every write's reply still tells of it.
    ctx.run("after", runs.update, ["after"])
    ctx.run("after that", runs.update, ["after that"])
    assert runs == {"reserve": 1, "undo": 1, "after": 1, "after that": 1}


def test_a_cancel_raised_by_result_replays_at_that_very_result(
    store: MemoryJournalStore,
) -> None:
    # Two result() calls at the same journal position: the cancel came between them (from
    # a lease renewal). A replay must raise at the second, not at the first.
    def body(ctx: DurableContext, hear: bool) -> list[str]:
        seen = []
        timer = ctx.timer(0, "t")
        timer.result()
        seen.append("first")
        if hear:  # cancelled now, and heard of from the lease's renewal (no write between)
            ctx._ex.store.cancel(ctx.invocation_id, "renewal said so")  # type: ignore[attr-defined]
            ctx._ex.heard_of_cancel("renewal said so")  # type: ignore[attr-defined]
        try:
            timer.result()
            seen.append("second")
        except InvocationCancelled:
            seen.append("cancelled at second")
        return seen

    ex = started(store)
    assert body(DurableContext(ex), hear=True) == ["first", "cancelled at second"]
    ex.close()
    store.release("inv-1", ex.fence)
    again = started(store)
    assert body(DurableContext(again), hear=False) == ["first", "cancelled at second"]


def test_a_cancel_heard_at_the_start_waits_for_the_end_of_the_replay(
    store: MemoryJournalStore,
) -> None:
    runs: Counter[str] = Counter()
    execute(store, lambda ctx: ctx.run("a", runs.update, ["a"]) and None, task_id="other")
    ex = started(store)
    ctx = DurableContext(ex)
    ctx.run("a", runs.update, ["a"])
    ctx.run("b", runs.update, ["b"])
    ex.close()
    store.release("inv-1", ex.fence)
    store.cancel("inv-1", "stop")

    again = started(store)
    ctx = DurableContext(again)
    ctx.run("a", runs.update, ["a"])  # replayed entries are handed back as they were
    ctx.run("b", runs.update, ["b"])
    with pytest.raises(InvocationCancelled):
        ctx.run("c", runs.update, ["c"])  # the first new operation raises it
    assert runs == {"a": 2, "b": 1}


def test_a_body_that_lets_the_cancel_escape_ends_cancelled(store: MemoryJournalStore) -> None:
    ex = started(store)
    store.cancel("inv-1", "stop")
    status, error = finish(store, ex, lambda ctx: [ctx.run("a", lambda: 1), ctx.run("b", int)])
    assert status == "cancelled"
    assert isinstance(error, InvocationCancelled) and error.reason == "stop"
    assert store.meta["inv-1"]["status"] == "cancelled"
    assert '"InvocationCancelled"' in store.meta["inv-1"]["outcome"]


def test_a_long_step_sees_the_cancel_it_heard_of(store: MemoryJournalStore) -> None:
    ex = started(store)
    seen = []

    def long_step(ctx: DurableContext) -> str:
        seen.append(ctx.cancelled)
        ctx._ex.heard_of_cancel("stop")  # type: ignore[attr-defined]  # the heartbeat
        seen.append(ctx.cancelled)  # usable inside a step's function
        return "stopped early"

    ctx = DurableContext(ex)
    assert ctx.run("long", long_step, ctx) == "stopped early"
    assert seen == [False, True]
    with pytest.raises(InvocationCancelled):
        ctx.sleep(10)


def test_a_replay_that_reaches_the_cancels_operation_elsewhere_is_not_deterministic(
    store: MemoryJournalStore,
) -> None:
    ex = started(store)
    ctx = DurableContext(ex)
    ctx.run("a", lambda: 1)
    store.cancel("inv-1", "stop")
    ctx.run("b", lambda: 2)  # it hears of the cancel from this write's reply
    with pytest.raises(InvocationCancelled):
        ctx.run("c", lambda: 3)  # raised at operation 3, journal index 2
    ex.close()
    store.release("inv-1", ex.fence)
    # The journal as a changed body would have made it: operation 3 at another index.
    journal = store.journals["inv-1"]
    journal[2:2] = [journal[1]]
    again = started(store)
    ctx = DurableContext(again)
    ctx.run("a", lambda: 1)
    ctx.run("b", lambda: 2)
    with pytest.raises(NonDeterminismError, match="cancel raised at durable operation #3"):
        ctx.run("b", lambda: 2)
