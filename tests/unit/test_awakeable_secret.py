"""The secret of an awakeable: 128 random bits, so that knowing a task id (or its seed,
or another awakeable's id) is not enough to complete it."""

from __future__ import annotations

import re
from typing import Any

from celery_durable.context import DurableContext
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.engine.execution import Execution
from celery_durable.stores.memory import MemoryJournalStore
from tests.unit.test_context import begin

OUTCOME = '{"s":"ok","v":"approved","t":0}'


def awakeables(store: MemoryJournalStore, task_id: str, n: int) -> list[AwakeableId]:
    """Start ``task_id`` (always with the same seed) and make ``n`` awakeables in it."""
    started = begin(store, task_id)
    assert isinstance(started, Execution)
    ctx = DurableContext(started)
    made = [AwakeableId.parse(ctx.awakeable(f"a{i}")[0]) for i in range(n)]
    assert all(made)
    return [a for a in made if a is not None]


def test_every_awakeable_has_its_own_secret_of_128_random_bits() -> None:
    store = MemoryJournalStore()
    made = awakeables(store, "inv-1", 20) + awakeables(store, "inv-2", 20)
    tokens = [a.token for a in made]
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)
    # Distinct, in one invocation and across invocations with the same seed: not a
    # constant, not derived from the task id, the position or ctx.rand.
    assert len(set(tokens)) == len(tokens)
    # The bits are spread, as random bits are: no hex digit stuck in any position.
    for position in range(32):
        assert len({token[position] for token in tokens}) > 4


def test_a_wrong_secret_completes_nothing() -> None:
    store = MemoryJournalStore()
    first, second = awakeables(store, "inv-1", 2)
    other = awakeables(store, "inv-2", 1)[0]
    guesses: list[Any] = [
        second.token,  # another awakeable's secret, of the same invocation
        other.token,  # one of another invocation
        "0" * 32,
        first.token[:-1] + ("0" if first.token[-1] != "0" else "1"),
        "",
    ]
    for guess in guesses:
        assert store.complete("inv-1", first.index, "awakeable", guess, OUTCOME) == 0
    assert store.completions("inv-1") == {}
    assert store.complete("inv-1", first.index, "awakeable", first.token, OUTCOME) == 1
    assert store.completions("inv-1") == {str(first.index): OUTCOME}
