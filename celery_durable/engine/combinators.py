"""``all`` and ``any``: futures over futures, with their outcome journaled.

A combinator's outcome is journaled where the body first finds it decided: for
``any`` the position of the winner, the future that completed first; for ``all``
the position of the failure it ends with, if any. A replay takes the journaled
branch even when, by then, other futures have completed too. Each combinator is
numbered in the order the body makes it, so that nested combinators of one kind
find their own entries.

Entry values: ``{"c": number, "w": winner}`` (any), ``{"c": number, "f": position or
null}`` (all).
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

from celery_durable.engine.execution import Execution
from celery_durable.engine.futures import Done, DurableFuture, InProcess, Outcome
from celery_durable.engine.reopen import Owned
from celery_durable.errors import ContextError
from celery_durable.journal.failures import rebuild


class Combinator(DurableFuture[Any]):
    """``all`` or ``any`` over other futures of the same execution."""

    __slots__ = ("_futures", "_kind", "_name", "_number", "_outcome", "_settle")

    def __init__(
        self,
        execution: Execution,
        kind: str,
        futures: tuple[DurableFuture[Any], ...],
        name: str,
        settle: bool = False,
    ) -> None:
        super().__init__(execution)
        for future in futures:
            if not isinstance(future, DurableFuture) or future._ex is not execution:
                raise ContextError(
                    f"ctx.{kind}() takes futures of this invocation (from ctx.run_async, "
                    f"ctx.timer, ctx.call, ctx.awakeable, ctx.all, ctx.any), not {future!r}."
                )
        if not futures:
            raise ContextError(f"ctx.{kind}() needs at least one future.")
        self._kind, self._futures, self._name, self._settle = kind, futures, name, settle
        self._number = execution.combinators
        execution.combinators += 1
        self._outcome: Outcome | None = None

    def poll(self) -> Outcome | None:
        if self._outcome is not None:
            return self._outcome
        ex = self._ex
        while True:
            if ex.position < len(ex.entries) and self._is_mine(ex.entry(ex.position)):
                index, entry = ex.position, ex.entry(ex.position)
                self._outcome = self._replay(entry)
                ex.advance(ex.position)
                if index >= ex.own_from:  # an entry taken over from an earlier execution
                    ex.owned[index] = Owned(self._name, self._kind, members=self._steps())
                if ex.observer is not None:
                    value = entry["v"]
                    ex.observer.step_replayed(ex, index, self._kind, self._name, 1, value, None)
                return self._outcome
            before = ex.position
            outcomes = [future.poll() for future in self._futures]
            if ex.position == before:
                break  # no nested combinator journaled meanwhile: decide now, if decided
        decided = self._decide(outcomes)
        if decided is None:
            return None
        outcome, journaled = decided
        if ex.position < len(ex.entries):
            recorded = ex.entry(ex.position)
            ex.mismatch(ex.position, f"{recorded['k']} {recorded['n']!r}", self._describe())
        value = json.dumps({"c": self._number, **journaled})
        owned = Owned(self._name, self._kind, members=self._steps())
        ex.record(self._kind, self._name, value, owned)
        self._outcome = outcome
        return outcome

    def local(self) -> list[Future[Any]]:
        if self._outcome is not None:
            return []
        return [work for future in self._futures for work in future.local()]

    def awaited(self) -> list[dict[str, Any]]:
        if self._outcome is not None:
            return []
        return [waited for future in self._futures for waited in future.awaited()]

    def _steps(self) -> tuple[int, ...] | None:
        """The journal indexes of its futures, if all are ``run_async`` steps."""
        steps = tuple(f.step_index for f in self._futures if isinstance(f, InProcess | Done))
        return steps if len(steps) == len(self._futures) else None

    # -- Deciding -------------------------------------------------------------------------

    def _decide(self, outcomes: list[Outcome | None]) -> tuple[Outcome, dict[str, Any]] | None:
        done = sorted((o.at, i) for i, o in enumerate(outcomes) if o is not None)
        if self._kind == "any":
            if not done:
                return None
            at, winner = done[0]
            return Outcome(True, winner, at=at), {"w": winner}
        failed = [(at, i) for at, i in done if not outcomes[i].ok]  # type: ignore[union-attr]
        if failed and not self._settle:
            at, first = failed[0]
            return self._all_outcome(outcomes, first), {"f": first}
        if len(done) < len(outcomes):
            return None
        return self._all_outcome(outcomes, None), {"f": None}

    def _all_outcome(self, outcomes: list[Outcome | None], failed: int | None) -> Outcome:
        latest = max((o.at for o in outcomes if o is not None), default=0.0)
        if failed is not None:
            failure = outcomes[failed]
            assert failure is not None
            return Outcome(False, error=failure.error, at=failure.at)
        values = [o.value if o.ok else rebuild(o.error or {}) for o in outcomes if o is not None]
        return Outcome(True, values, at=latest)

    # -- Replaying ------------------------------------------------------------------------

    def _is_mine(self, entry: dict[str, Any]) -> bool:
        value = entry.get("v")
        return bool(entry["k"] == self._kind and isinstance(value, dict) and (
            value.get("c") == self._number
        ))  # fmt: skip

    def _replay(self, entry: dict[str, Any]) -> Outcome:
        value = entry["v"]
        position = value["w"] if self._kind == "any" else value["f"]
        if position is not None and not 0 <= position < len(self._futures):
            self._ex.unreadable(
                f"journal entry {self._ex.position}",
                f"it names future {position} of {self._describe()}, which has {len(self._futures)}",
            )
        if self._kind == "any":
            return Outcome(True, position)
        outcomes = [future.poll() for future in self._futures]
        if value["f"] is not None:
            failure = outcomes[value["f"]]
            if failure is None:
                self._ex.mismatch(self._ex.position, self._describe(), "an unfinished future")
            return Outcome(False, error=failure.error, at=failure.at)
        if any(o is None for o in outcomes):
            self._ex.mismatch(self._ex.position, self._describe(), "an unfinished future")
        return self._all_outcome(outcomes, None)

    def _describe(self) -> str:
        return f"{self._kind} {self._name!r} (combinator #{self._number})"
