"""``DurableContext``: what durable code calls, and how it replays the journal.

An execution walks the journal from the top. While the code asks for operations
the journal already holds, the context returns their recorded outcome; from the
first new operation on it runs the code and stores the outcome before returning.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery_durable.codec import Codec, resolve_codec
from celery_durable.errors import CodecError, ContextError, NonDeterminismError, TerminalError
from celery_durable.journal import JournalStore, encode_entry, error_record
from celery_durable.rand import DurableRandom

T = TypeVar("T")


class DurableContext:
    """The durable context of one execution of an invocation.

    Get it as ``self.ctx`` inside a ``DurableTask``.
    """

    __slots__ = ("_active", "_codec", "_entries", "_id", "_in_step", "_position", "_rand", "_store")

    def __init__(
        self,
        store: JournalStore,
        invocation_id: str,
        seed: int,
        entries: list[str],
        codec: Codec[Any],
    ) -> None:
        self._store = store
        self._id = invocation_id
        self._entries = entries
        self._codec = codec
        self._position = 0
        self._in_step: str | None = None
        self._active = True
        self._rand = DurableRandom(seed)

    @property
    def invocation_id(self) -> str:
        """The Celery task id of this invocation."""
        return self._id

    @property
    def is_replaying(self) -> bool:
        """True while the code is still being handed recorded outcomes."""
        return self._position < len(self._entries)

    @property
    def rand(self) -> DurableRandom:
        """Random values that are the same on every replay; not for cryptography."""
        self.ensure_usable("ctx.rand")
        return self._rand

    def run(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        codec: str | Codec[Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once per invocation and return its journaled value.

        Args:
            name: The step's name, part of its identity: keep it stable across deploys.
            fn: What to run. It must not use the context.
            codec: How to store the value; the task's default (json) when not given.

        Returns:
            The value as decoded from the journal, on the first run and on replays.

        Raises:
            TerminalError: ``fn`` raised it, now or on the execution that journaled it.
            NonDeterminismError: the journal holds another operation at this point.
            CodecError: the codec cannot store the value; nothing was journaled.
        """
        self.ensure_usable("ctx.run")
        chosen = self._codec if codec is None else resolve_codec(codec)
        index = self._position
        if index < len(self._entries):
            return cast(T, self._replay(index, "run", name, chosen))

        started_at = time.time()
        self._in_step = name
        error: dict[str, Any] | None = None
        payload: str | None = None
        try:
            value = fn(*args, **kwargs)
        except TerminalError as exc:
            error = error_record(exc)
        else:
            try:
                payload = chosen.encode(value)
            except CodecError as exc:
                raise CodecError(
                    f"step {name!r} (index {index}) of invocation {self._id} returned a "
                    f"{type(value).__name__} that its codec cannot store, so nothing was "
                    f"journaled: {exc}"
                ) from exc.__cause__
        finally:
            self._in_step = None

        entry = encode_entry("run", name, started_at, time.time(), chosen.name, payload, error)
        existing = self._store.append(self._id, index, entry)
        if existing is not None:
            # Another execution journaled this step first; its outcome is the one.
            self._entries.append(existing)
            return cast(T, self._replay(index, "run", name, chosen))
        self._advance(index)
        if error is not None:
            raise terminal_error_from(error)
        return cast(T, chosen.decode(json.loads(payload)))  # type: ignore[arg-type]

    # -- Execution plumbing, used by the task -----------------------------------------

    def close(self) -> None:
        """End the execution: later use of this context is an error."""
        self._active = False

    def pending_operations(self) -> int:
        """Return how many journaled operations the code has not reached yet."""
        return len(self._entries) - self._position

    # -- Internals ----------------------------------------------------------------------

    def _replay(self, index: int, kind: str, name: str, codec: Codec[Any]) -> Any:
        entry = json.loads(self._entries[index])
        if entry["k"] != kind or entry["n"] != name:
            self._mismatch(index, f"{entry['k']} {entry['n']!r}", f"{kind} {name!r}")
        recorded_codec = entry.get("c", "json")
        if recorded_codec != codec.name:
            self._mismatch(
                index,
                f"{kind} {name!r} stored with codec {recorded_codec!r}",
                f"the same step with codec {codec.name!r}",
            )
        self._advance(index)
        return self._outcome(entry, codec)

    def _advance(self, index: int) -> None:
        self._position = index + 1
        self._rand.at_position(index + 1)

    def _outcome(self, entry: dict[str, Any], codec: Codec[Any]) -> Any:
        if entry["s"] == "error":
            raise terminal_error_from(entry["e"])
        return codec.decode(entry["v"])

    def _mismatch(self, index: int, recorded: str, asked: str) -> None:
        message = (
            f"invocation {self._id} is not deterministic at journal index {index}: "
            f"the journal recorded {recorded}, but the code asked for {asked}. "
            "Steps are matched by (index, kind, name), so renaming, adding or reordering "
            "steps breaks replay of invocations already running. It is paused: deploy code "
            "that asks for the recorded step and send the task again with the same task id "
            "and arguments to resume it from the journal, or forget it with "
            f"celery_durable.forget_invocation(app, {self._id!r})."
        )
        self._store.pause(self._id, message)
        self._active = False
        raise NonDeterminismError(message)

    def ensure_usable(self, what: str) -> None:
        """Raise ``ContextError`` when the context is used inside a step or after the end."""
        if self._in_step is not None:
            raise ContextError(
                f"{what} was used inside the function of step {self._in_step!r}. A step's "
                "function runs once and its value is journaled; durable operations inside it "
                "would not be. Call them from the task body, between steps."
            )
        if not self._active:
            raise ContextError(
                f"{what} was used after invocation {self._id} stopped executing. "
                "Use the context only inside the task body while it runs."
            )


def terminal_error_from(record: dict[str, Any]) -> TerminalError:
    """Rebuild the ``TerminalError`` that a journaled error record describes."""
    return TerminalError(
        record.get("message", ""),
        record.get("metadata") or {},
        error_type=record.get("type"),
        attempts=record.get("attempts", 1),
    )
