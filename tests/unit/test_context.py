"""Context and execution logic against the in-memory store: replay, errors, round trips."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.codec import JsonCodec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import (
    CodecError,
    ContextError,
    InvocationConflictError,
    LeaseLost,
    NonDeterminismError,
    TerminalError,
    ValueTooLargeError,
)
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.store import StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.stores.memory import MemoryJournalStore

Body = Callable[[DurableContext], Any]
CODEC = JsonCodec[Any]()
DEFAULT_POLICY = RetryPolicy()


def begin(
    store: MemoryJournalStore,
    task_id: str = "inv-1",
    args: Any = (),
    policy: RetryPolicy = DEFAULT_POLICY,
    lease_ttl: float = 0.0,
) -> Execution | invocation.Finished | invocation.Busy:
    """Start an execution as DurableTask does.

    The lease lasts ``lease_ttl``: 0 by default, so that an execution that raises
    ``Crash`` (never ends) looks like one whose worker died by the next start.
    """
    request = StartRequest(
        "shop.checkout", fingerprint(args, {}), seed=7, lease_ttl=lease_ttl, holder="test:1"
    )
    return invocation.begin(store, task_id, request, CODEC, policy, retention=60)


def execute(
    store: MemoryJournalStore,
    body: Body,
    task_id: str = "inv-1",
    args: Any = (),
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Any:
    """One execution, as DurableTask runs it: begin, body, complete."""
    started = begin(store, task_id, args, policy)
    if isinstance(started, invocation.Finished):
        return started.replay(CODEC)
    assert isinstance(started, Execution), started
    try:
        value = body(DurableContext(started))
    finally:
        started.close()
    return invocation.complete(store, started, value, CODEC, retention=60)


class Crash(BaseException):
    """Stands in for the worker dying: nothing after it runs, nothing is finished."""


@pytest.fixture
def store() -> MemoryJournalStore:
    return MemoryJournalStore()


def test_replay_returns_recorded_values_without_running_steps(store: MemoryJournalStore) -> None:
    runs: list[str] = []
    executions: list[int] = []

    def step(name: str) -> Any:
        runs.append(name)
        return (name, len(runs))

    def body(ctx: DurableContext) -> Any:
        executions.append(1)
        first = ctx.run("a", step, "a")
        second = ctx.run("b", step, "b")
        if len(executions) == 1:
            raise Crash  # dies after b is journaled, before finishing
        return [first, second]

    with pytest.raises(Crash):
        execute(store, body)
    assert execute(store, body) == [["a", 1], ["b", 2]]
    assert runs == ["a", "b"]


def test_a_step_returns_the_decoded_value_on_the_first_run_too(store: MemoryJournalStore) -> None:
    seen: list[Any] = []
    execute(store, lambda ctx: seen.append(ctx.run("t", lambda: (1, 2))))
    assert seen == [[1, 2]]


def test_is_replaying_is_true_only_while_recorded_steps_remain(store: MemoryJournalStore) -> None:
    states: list[bool] = []

    def body(ctx: DurableContext) -> None:
        states.append(ctx.is_replaying)
        ctx.run("a", lambda: 1)
        states.append(ctx.is_replaying)
        if len(states) == 2:
            raise Crash

    with pytest.raises(Crash):
        execute(store, body)
    execute(store, body)
    assert states == [False, False, True, False]


def test_random_values_repeat_and_depend_on_journal_position(store: MemoryJournalStore) -> None:
    draws: list[list[int]] = []

    def body(ctx: DurableContext) -> None:
        mine = [ctx.rand.uint64()]
        ctx.run("a", lambda: None)
        mine.append(ctx.rand.uint64())
        draws.append(mine)
        if len(draws) == 1:
            raise Crash

    with pytest.raises(Crash):
        execute(store, body)
    execute(store, body)
    assert draws[0] == draws[1]
    assert draws[0][0] != draws[0][1]


def test_a_terminal_error_is_journaled_and_replayed(store: MemoryJournalStore) -> None:
    runs: list[int] = []
    caught: list[TerminalError] = []

    def decline() -> None:
        runs.append(1)
        raise TerminalError("card declined", {"code": 51})

    def body(ctx: DurableContext) -> str:
        try:
            ctx.run("charge", decline)
        except TerminalError as exc:
            caught.append(exc)
        if len(caught) == 1:
            raise Crash
        return "compensated"

    with pytest.raises(Crash):
        execute(store, body)
    assert execute(store, body) == "compensated"
    assert runs == [1]
    assert [(e.message, e.metadata) for e in caught] == [("card declined", {"code": 51})] * 2


def test_a_finished_invocation_returns_its_result_without_running(
    store: MemoryJournalStore,
) -> None:
    runs: list[int] = []

    def body(ctx: DurableContext) -> int:
        runs.append(1)
        return 42

    assert execute(store, body) == 42
    assert execute(store, body) == 42
    assert runs == [1]
    assert 59 < store.expires_at["inv-1"] - time.monotonic() <= 60


def test_a_changed_step_name_pauses_the_invocation(store: MemoryJournalStore) -> None:
    def old(ctx: DurableContext) -> None:
        ctx.run("reserve", lambda: 1)
        raise Crash

    def new(ctx: DurableContext) -> None:
        ctx.run("reserve_stock", lambda: 1)

    with pytest.raises(Crash):
        execute(store, old)
    with pytest.raises(NonDeterminismError) as info:
        execute(store, new)
    message = str(info.value)
    assert "invocation inv-1" in message
    assert "index 0" in message
    assert "recorded run 'reserve'" in message
    assert "asked for run 'reserve_stock'" in message
    assert store.meta["inv-1"]["status"] == "paused"
    assert len(store.journals["inv-1"]) == 1


@pytest.mark.parametrize("how", ["run", "run_async"])
def test_a_step_replayed_with_another_codec_pauses_the_invocation(
    store: MemoryJournalStore, how: str
) -> None:
    def body(codec: str) -> Body:
        def run(ctx: DurableContext) -> Any:
            if how == "run":
                ctx.run("quote", lambda: 7, codec=codec)
            else:
                ctx.run_async("quote", lambda: 7, codec=codec).result()
            raise Crash

        return run

    with pytest.raises(Crash):
        execute(store, body("pickle"))
    # Decoding a pickled value as JSON would hand the body a base64 string.
    with pytest.raises(NonDeterminismError, match="stored with codec 'pickle'"):
        execute(store, body("json"))
    assert store.meta["inv-1"]["status"] == "paused"


def test_a_reused_id_with_other_arguments_is_refused(store: MemoryJournalStore) -> None:
    execute(store, lambda ctx: ctx.run("a", lambda: 1), args=("order-1",))
    with pytest.raises(InvocationConflictError, match="other arguments"):
        execute(store, lambda ctx: ctx.run("a", lambda: 2), args=("order-2",))
    assert store.meta["inv-1"]["status"] == "completed"


def test_an_unencodable_value_journals_nothing(store: MemoryJournalStore) -> None:
    def body(ctx: DurableContext) -> None:
        ctx.run("make_set", lambda: {1, 2})

    with pytest.raises(CodecError, match=r"step 'make_set' \(index 0\).*set"):
        execute(store, body)
    assert store.journals["inv-1"] == []


def test_the_context_is_refused_inside_a_step(store: MemoryJournalStore) -> None:
    def body(ctx: DurableContext) -> None:
        ctx.run("outer", lambda: ctx.run("inner", lambda: 1))

    with pytest.raises(ContextError, match="inside the function of step 'outer'"):
        execute(store, body)


def test_the_context_is_refused_after_the_execution(store: MemoryJournalStore) -> None:
    kept: list[DurableContext] = []
    execute(store, kept.append)
    with pytest.raises(ContextError, match="after invocation inv-1 stopped"):
        kept[0].run("late", lambda: 1)


def test_round_trips_are_one_to_start_one_per_step_one_to_finish(
    store: MemoryJournalStore,
) -> None:
    execute(store, lambda ctx: [ctx.run(f"s{i}", int, i) for i in range(10)])
    assert store.round_trips == 1 + 10 + 1


def test_a_second_execution_waits_for_the_lease_of_the_first(store: MemoryJournalStore) -> None:
    first = begin(store, lease_ttl=30)
    assert isinstance(first, Execution)
    second = begin(store, lease_ttl=30)
    assert isinstance(second, invocation.Busy)
    assert 29 < second.seconds <= 30
    assert second.holder == "test:1"


def test_an_execution_whose_lease_was_taken_can_write_nothing(store: MemoryJournalStore) -> None:
    first = begin(store, lease_ttl=0)  # its lease is over at once: as if it stalled
    assert isinstance(first, Execution)
    DurableContext(first).run("s0", lambda: "first")
    second = begin(store, lease_ttl=30)
    assert isinstance(second, Execution)
    assert second.fence == first.fence + 1
    with pytest.raises(LeaseLost, match="another execution holds it"):
        DurableContext(first).run("s1", lambda: "stale")
    assert DurableContext(second).run("s0", lambda: "second") == "first"  # replayed
    assert DurableContext(second).run("s1", lambda: "second") == "second"
    assert [json.loads(e)["v"] for e in store.journals["inv-1"]] == ["first", "second"]
    with pytest.raises(LeaseLost):
        invocation.complete(store, first, "stale result", CODEC, retention=60)
    assert invocation.complete(store, second, "done", CODEC, retention=60) == "done"


def test_a_stale_execution_cannot_pause_a_finished_invocation(store: MemoryJournalStore) -> None:
    stale = begin(store, lease_ttl=0)
    assert isinstance(stale, Execution)
    assert execute(store, lambda ctx: ctx.run("a", lambda: 1)) == 1
    with pytest.raises(LeaseLost):
        DurableContext(stale).run("b", lambda: 1)  # a mismatch here would pause it
    assert store.meta["inv-1"]["status"] == "completed"


def test_step_names_must_be_non_empty_strings(store: MemoryJournalStore) -> None:
    for bad in (None, "", 123):
        with pytest.raises(ContextError, match="non-empty str"):
            execute(store, lambda ctx, bad=bad: ctx.run(bad, lambda: 1))  # type: ignore[arg-type]
    assert store.journals["inv-1"] == []


def test_a_value_larger_than_the_limit_is_refused_before_it_is_journaled(
    store: MemoryJournalStore,
) -> None:
    def body(ctx: DurableContext) -> None:
        ctx._ex.max_value_bytes = 1024
        ctx.run("small", lambda: "x" * 100)
        ctx.run("big", lambda: "é" * 600)  # 600 characters, 1,202 bytes once encoded

    with pytest.raises(ValueTooLargeError, match=r"step 'big' \(index 1\).*1202 bytes"):
        execute(store, body)
    assert len(store.journals["inv-1"]) == 1
