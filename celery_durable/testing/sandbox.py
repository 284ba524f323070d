"""The sandbox a replayed body runs in: an execution over a recorded journal that can
write nothing, a context that stops past the journal's end, and a host that starts no
child. ``replayer`` turns what stops the body here into its verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.engine.futures import DurableFuture
from celery_durable.journal.entries import parse


class Beyond(BaseException):
    """The code asked for an operation past the end of the recorded journal."""

    def __init__(self, index: int, asked: str) -> None:
        super().__init__(asked)
        self.index, self.asked = index, asked


class Diverged(BaseException):
    """The code asked for another operation than the recorded one."""

    def __init__(self, index: int, recorded: str, asked: str) -> None:
        super().__init__(asked)
        self.index, self.recorded, self.asked = index, recorded, asked


class ReplayExecution(Execution):
    """An execution over a recorded journal that can write nothing new."""

    __slots__ = ("lenient_codecs",)
    lenient_codecs: bool

    def commit(self, index: int, entry: str, ends_attempts: bool, owned: Any = None) -> bool:
        raise Beyond(index, describe(entry))

    def mismatch(self, index: int, recorded: str, asked: str) -> NoReturn:
        raise Diverged(index, recorded, asked)

    def refresh_completions(self) -> None:
        pass  # the journal's completions are all there will be

    def expect(self, index: int, kind: str, name: str, codec: Any = None) -> dict[str, Any]:
        if self.lenient_codecs and codec is not None and codec.name != "json":
            # The invocation form does not say which codec stored a value: take the one
            # the code asks for.
            entry = parse(self.entries[index])
            if "c" not in entry:
                entry["c"] = codec.name
                self.entries[index] = json.dumps(entry)
        return super().expect(index, kind, name, codec)


class ReplayContext(DurableContext):
    """The context a replayed body gets: steps past the journal's end are not run."""

    __slots__ = ()

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self._stop_past_the_end("run", name)
        return super().run(name, fn, *args, **kwargs)

    def run_async(
        self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> DurableFuture[Any]:
        self._stop_past_the_end("run", name)
        return super().run_async(name, fn, *args, **kwargs)

    def _stop_past_the_end(self, kind: str, name: str) -> None:
        ex = self._ex
        if ex.position >= len(ex.entries):
            ex.ensure_usable(f"ctx.{kind}")
            raise Beyond(ex.position, f"{kind} {name!r}")


class NoHost:
    """Children of a replayed body are never started: their outcomes are in the journal."""

    def describe_call(self, signature: Any, timeout: float | None = None) -> str:
        return str(getattr(signature, "task", signature))

    def publish_call(
        self,
        signature: Any,
        child_id: str,
        index: int,
        token: str,
        timeout: float | None = None,
    ) -> bool:
        return False

    def cancel_children(self, children: list[tuple[int, str]], reason: str) -> None:
        pass


def describe(entry: str) -> str:
    parsed = parse(entry)
    return f"{parsed['k']} {parsed['n']!r}"
