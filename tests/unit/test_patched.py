"""``ctx.patched`` and ``ctx.deprecate_patch`` on the in-memory store: versioning a body."""

from __future__ import annotations

import json

import pytest

from celery_durable.context import DurableContext
from celery_durable.errors import ContextError, NonDeterminismError
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import Crash, execute

CHANGE = "charge-with-3ds"


def kinds(store: MemoryJournalStore, task_id: str = "inv-1") -> list[tuple[str, str]]:
    return [(e["k"], e["n"]) for e in map(json.loads, store.journals[task_id])]


def step(ctx: DurableContext, name: str, stop: str | None) -> str:
    """Run step ``name``; die right after it is journaled when it is ``stop``."""
    value: str = ctx.run(name, lambda: name)
    if name == stop:
        raise Crash  # the worker is killed: the next delivery replays
    return value


def old_body(ctx: DurableContext, stop: str | None = None) -> str:
    step(ctx, "reserve", stop)
    charge = step(ctx, "charge", stop)
    step(ctx, "ship", stop)
    return charge


def patched_body(
    ctx: DurableContext, stop: str | None = None, seen: list[bool] | None = None
) -> str:
    step(ctx, "reserve", stop)
    new = ctx.patched(CHANGE)
    if seen is not None:
        seen.append(new)
    charge = step(ctx, "charge_3ds", stop) if new else step(ctx, "charge", stop)
    step(ctx, "ship", stop)
    return charge


def deprecated_body(ctx: DurableContext, stop: str | None = None) -> str:
    step(ctx, "reserve", stop)
    ctx.deprecate_patch(CHANGE)
    charge = step(ctx, "charge_3ds", stop)
    step(ctx, "ship", stop)
    return charge


def test_a_new_invocation_takes_the_patched_branch_and_journals_a_marker() -> None:
    store = MemoryJournalStore()
    seen: list[bool] = []
    assert execute(store, lambda ctx: patched_body(ctx, seen=seen)) == "charge_3ds"
    assert seen == [True]
    assert kinds(store) == [
        ("run", "reserve"), ("patch", CHANGE), ("run", "charge_3ds"), ("run", "ship"),
    ]  # fmt: skip


def test_its_replays_take_the_patched_branch_again_without_a_second_marker() -> None:
    store = MemoryJournalStore()
    seen: list[bool] = []
    with pytest.raises(Crash):
        execute(store, lambda ctx: patched_body(ctx, "charge_3ds", seen))
    assert execute(store, lambda ctx: patched_body(ctx, seen=seen)) == "charge_3ds"
    assert seen == [True, True]
    assert [k for k, _ in kinds(store)] == ["run", "patch", "run", "run"]


def test_an_invocation_that_passed_the_point_before_the_change_takes_the_old_branch() -> None:
    store = MemoryJournalStore()
    seen: list[bool] = []
    with pytest.raises(Crash):  # the old code ran past the patch point; then the deploy
        execute(store, lambda ctx: old_body(ctx, "charge"))
    assert execute(store, lambda ctx: patched_body(ctx, seen=seen)) == "charge"
    assert seen == [False]
    # The entry at the patch point was left for the old branch: no marker, none skipped.
    assert kinds(store) == [("run", "reserve"), ("run", "charge"), ("run", "ship")]


def test_an_invocation_that_had_not_reached_the_point_takes_the_new_branch() -> None:
    store = MemoryJournalStore()
    seen: list[bool] = []
    with pytest.raises(Crash):
        execute(store, lambda ctx: old_body(ctx, "reserve"))
    assert execute(store, lambda ctx: patched_body(ctx, seen=seen)) == "charge_3ds"
    assert seen == [True]
    assert kinds(store)[1] == ("patch", CHANGE)


def test_a_later_patch_at_the_same_point_leaves_the_earlier_marker_in_place() -> None:
    store = MemoryJournalStore()
    with pytest.raises(Crash):
        execute(store, lambda ctx: patched_body(ctx, "charge_3ds"))

    def twice_patched(ctx: DurableContext) -> str:
        step(ctx, "reserve", None)
        if ctx.patched("charge-with-wallet"):
            return step(ctx, "wallet", None)
        charge = step(ctx, "charge_3ds", None) if ctx.patched(CHANGE) else ""
        step(ctx, "ship", None)
        return charge

    assert execute(store, twice_patched) == "charge_3ds"
    assert kinds(store)[1] == ("patch", CHANGE)
    assert execute(store, twice_patched, task_id="new") == "wallet"


def test_deprecating_a_patch_replays_journals_with_and_without_its_marker() -> None:
    store = MemoryJournalStore()
    with pytest.raises(Crash):  # started under the patched code: its journal has the marker
        execute(store, lambda ctx: patched_body(ctx, "charge_3ds"), task_id="marked")
    with pytest.raises(Crash):  # started under the old code, before the patch point
        execute(store, lambda ctx: old_body(ctx, "reserve"), task_id="unmarked")

    for task_id in ("marked", "unmarked", "new"):
        assert execute(store, deprecated_body, task_id=task_id) == "charge_3ds"
    assert [k for k, _ in kinds(store, "marked")] == ["run", "patch", "run", "run"]
    assert [k for k, _ in kinds(store, "unmarked")] == ["run", "run", "run"]
    assert [k for k, _ in kinds(store, "new")] == ["run", "run", "run"]  # journals nothing


def test_removing_a_patch_point_whose_marker_is_journaled_is_not_deterministic() -> None:
    # Why the deprecation step exists: code without the call trips over the marker.
    store = MemoryJournalStore()
    with pytest.raises(Crash):
        execute(store, lambda ctx: patched_body(ctx, "charge_3ds"))

    def removed(ctx: DurableContext) -> str:
        step(ctx, "reserve", None)
        return step(ctx, "charge_3ds", None)

    with pytest.raises(NonDeterminismError, match=f"recorded patch '{CHANGE}'"):
        execute(store, removed)


def test_a_change_id_must_be_a_non_empty_string() -> None:
    store = MemoryJournalStore()
    with pytest.raises(ContextError, match=r"ctx\.patched"):
        execute(store, lambda ctx: ctx.patched(""))
