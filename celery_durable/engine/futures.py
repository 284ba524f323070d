"""Durable futures: outcomes that an execution waits for, in process or from outside.

A future's outcome comes from the journal (replayed), from this process (a
``run_async`` step's thread), from the clock (a timer) or from outside (a child task,
an awakeable: a completion in the invocation's completions hash). ``result()`` waits
in process for local outcomes; when the outcome can only come from outside and is not
there yet, it raises ``Suspended`` and the invocation is delivered again once it is.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from celery_durable.codec import PLAIN_JSON
from celery_durable.engine.execution import Execution
from celery_durable.errors import CodecError, Suspended
from celery_durable.journal.entries import Unreadable, read_completion
from celery_durable.journal.failures import ErrorRecord, rebuild

T = TypeVar("T")

#: How long to wait for local work before looking again for outcomes from outside.
POLL_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a future completed: a value or an error record, and when."""

    ok: bool
    value: Any = None
    error: ErrorRecord | None = None
    at: float = 0.0
    """When it completed (seconds since the epoch): an ``any`` picks the earliest."""

    def unwrap(self) -> Any:
        """Return the value, or raise the error as ``rebuild`` makes it."""
        if self.ok:
            return self.value
        raise rebuild(self.error or {})

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """Read a completion as journaled: ``{"s": "ok"|"error", "v"|"e": ..., "t": ...}``.

        Raises:
            Unreadable: it is not one.
        """
        raw = read_completion(text)
        if raw["s"] == "error":
            return cls(False, error=raw["e"], at=raw.get("t", 0.0))
        try:
            value = PLAIN_JSON.decode(raw["v"])
        except CodecError as exc:
            raise Unreadable(str(exc)) from exc
        return cls(True, value, at=raw.get("t", 0.0))


class DurableFuture(Generic[T]):
    """An outcome an invocation waits for: a step in a thread, a timer, a child task, an
    awakeable, or a combination of them (``ctx.all``, ``ctx.any``)."""

    __slots__ = ("_ex",)

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    def result(self) -> T:
        """Return the value, or raise the failure (a ``TerminalError`` of its original type).

        Waits in process for steps running in this execution; suspends the invocation
        when the outcome can only come from outside (a timer, a child, an awakeable)
        and is not there yet.
        """
        self._ex.ensure_usable("result()")
        self._ex.operation()
        value: T = settle(self._ex, self).unwrap()
        return value

    # -- What combinators and settle() ask of every future -------------------------------

    def poll(self) -> Outcome | None:
        """The outcome if it is there now, else None. Never waits."""
        raise NotImplementedError

    def local(self) -> list[Future[Any]]:
        """Work in this process that its outcome waits for."""
        return []

    def awaited(self) -> list[dict[str, Any]]:
        """What from outside its outcome waits for: ``index``, ``kind``, ``name``, ``until``."""
        return []


class Done(DurableFuture[T]):
    """A future whose outcome is known: replayed from the journal."""

    __slots__ = ("_outcome", "step_index")

    def __init__(self, execution: Execution, outcome: Outcome, step_index: int) -> None:
        super().__init__(execution)
        self._outcome = outcome
        self.step_index = step_index
        """The journal index of its ``run_async`` step."""

    def poll(self) -> Outcome | None:
        return self._outcome


class InProcess(DurableFuture[T]):
    """A step running in a thread of this execution (``run_async``)."""

    __slots__ = ("_future", "step_index")

    def __init__(self, execution: Execution, future: Future[Outcome], step_index: int) -> None:
        super().__init__(execution)
        self._future = future
        self.step_index = step_index
        """The journal index of its ``run_async`` step."""

    def poll(self) -> Outcome | None:
        # Done only once its entry is committed: flush before return.
        return self._future.result() if self._future.done() else None

    def local(self) -> list[Future[Any]]:
        return [] if self._future.done() else [self._future]


class Timer(DurableFuture[None]):
    """Completes when its journaled wake-up time has passed."""

    __slots__ = ("_index", "_name", "_until")

    def __init__(self, execution: Execution, index: int, name: str, until: float) -> None:
        super().__init__(execution)
        self._index, self._name, self._until = index, name, until

    def poll(self) -> Outcome | None:
        return Outcome(True, None, at=self._until) if time.time() >= self._until else None

    def awaited(self) -> list[dict[str, Any]]:
        if time.time() >= self._until:
            return []
        return [{"index": self._index, "kind": "sleep", "name": self._name, "until": self._until}]


class FromOutside(DurableFuture[T]):
    """Completes when its outcome is in the invocation's completions (a child, an awakeable)."""

    __slots__ = ("_index", "_kind", "_name")

    def __init__(self, execution: Execution, index: int, kind: str, name: str) -> None:
        super().__init__(execution)
        self._index, self._kind, self._name = index, kind, name

    def poll(self) -> Outcome | None:
        text = self._ex.completions.get(str(self._index))
        if text is None:
            return None
        try:
            return Outcome.parse(text)
        except Unreadable as exc:
            where = f"outcome of {self._kind} {self._name!r} (journal index {self._index})"
            self._ex.unreadable(where, str(exc))

    def awaited(self) -> list[dict[str, Any]]:
        if str(self._index) in self._ex.completions:
            return []
        return [{"index": self._index, "kind": self._kind, "name": self._name}]


def settle(ex: Execution, future: DurableFuture[Any]) -> Outcome:
    """Return the future's outcome: wait for local work, suspend for outside work.

    Raises:
        Suspended: the outcome can only come from outside and is not there yet.
    """
    while True:
        outcome = future.poll()
        if outcome is not None:
            return outcome
        local = future.local()
        if not local:
            raise Suspended(future.awaited())
        wait(local, timeout=POLL_INTERVAL, return_when=FIRST_COMPLETED)
        if future.awaited():  # something from outside may have come meanwhile
            ex.refresh_completions()
