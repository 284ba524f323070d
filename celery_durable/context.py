"""``DurableContext``: what durable code calls, and how it replays the journal.

An execution walks the journal from the top. While the code asks for operations
the journal already holds, the context returns their recorded outcome; from the
first new operation on it runs the code and stores the outcome before returning.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

from celery_durable.attempts import WORKER_LOST, Attempts, judge
from celery_durable.codec import JSON_SCALARS, PLAIN_JSON, Codec, resolve_codec
from celery_durable.errors import (
    CodecError,
    ConfigurationError,
    ContextError,
    NonDeterminismError,
    StepInterruptedError,
    StepRetry,
    TerminalError,
)
from celery_durable.journal import JournalStore, Started, encode_entry, error_record
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom

T = TypeVar("T")

#: json.loads without its per-call checks: journal entries are always str.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse(text: str) -> Any:
    return _scan(text, 0)[0]


#: Errors of this library that a step's function may raise by misusing it.
_MISUSE = (ContextError, CodecError, ConfigurationError, NonDeterminismError)


class DurableContext:
    """The durable context of one execution of an invocation.

    Get it as ``self.ctx`` inside a ``DurableTask``.
    """

    __slots__ = (
        "_active", "_codec", "_entries", "_id", "_in_step", "_policy", "_position", "_rand",
        "_resume", "_resume_at", "_store", "paused_by",
    )  # fmt: skip

    def __init__(
        self,
        store: JournalStore,
        invocation_id: str,
        started: Started,
        codec: Codec[Any],
        policy: RetryPolicy,
    ) -> None:
        self._store = store
        self._id = invocation_id
        self._entries = started.entries
        self._codec = codec
        self._policy = policy
        self._position = 0
        self._in_step: str | None = None
        self._active = True
        self._rand = DurableRandom(started.seed)
        # What earlier executions left about the first step this one will run.
        needs_resume = started.crashes or started.attempt or started.guard is not None
        self._resume: Started | None = started if needs_resume else None
        self._resume_at = started.length
        #: The error that paused the invocation, even if the body swallowed it.
        self.paused_by: NonDeterminismError | None = None

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
        retry: RetryPolicy | None = None,
        codec: str | Codec[Any] | None = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once per invocation and return its journaled value.

        Args:
            name: The step's name, part of its identity: keep it stable across deploys.
            fn: What to run. It must not use the context.
            retry: How a failing ``fn`` is retried; the task's default policy if None.
            codec: How to store the value; the task's default (json) if None.
            at_most_once: Journal that the step started before running it, and never
                run it a second time: if an execution dies inside it, the next one
                raises ``StepInterruptedError``. Costs one more round trip.

        Returns:
            The value as decoded from the journal, on the first run and on replays.

        Raises:
            TerminalError: ``fn`` raised it, or its retry policy is exhausted; now or
                on the execution that journaled it.
            NonDeterminismError: the journal holds another operation at this point.
            CodecError: the codec cannot store the value; nothing was journaled.
        """
        self.ensure_usable("ctx.run")
        chosen = self._codec if codec is None else resolve_codec(codec)
        index = self._position
        if index < len(self._entries):
            return cast(T, self._replay(index, "run", name, chosen))

        policy = self._policy if retry is None else _checked(retry)
        attempts = None
        if self._resume is not None:
            attempts, final = self._resume_attempts(index, name, policy)
            if final is not None:
                return cast(T, self._journal_error(index, name, time.time(), final, chosen))
        if at_most_once and (existing := self._store.guard(self._id, index)) is not None:
            return cast(T, self._adopt(index, name, existing, chosen))

        started_at = time.time()
        failures = attempts.failures if attempts else 0
        self._in_step = name
        try:
            value = fn(*args, **kwargs)
        except TerminalError as exc:
            error = error_record(exc, attempts=failures + 1)
            return cast(T, self._journal_error(index, name, started_at, error, chosen))
        except _MISUSE:
            raise  # a mistake in the code, not a failed attempt: retrying cannot help
        except Exception as exc:
            return cast(
                T, self._retry_or_give_up(index, name, policy, attempts, exc, started_at, chosen)
            )
        finally:
            self._in_step = None

        try:
            payload = chosen.encode(value)
        except CodecError as exc:
            raise CodecError(
                f"step {name!r} (index {index}) of invocation {self._id} returned a "
                f"{type(value).__name__} that its codec cannot store, so nothing was "
                f"journaled: {exc}"
            ) from exc.__cause__
        entry = encode_entry(
            "run", name, started_at, time.time(), chosen.name, payload, attempts=failures + 1
        )
        if not self._commit(index, entry, ends_attempts=at_most_once or attempts is not None):
            return cast(T, self._replay(index, "run", name, chosen))
        self._advance(index)
        if chosen is PLAIN_JSON and type(value) in JSON_SCALARS:
            return value  # decoding its JSON would give it back as it is
        return cast(T, chosen.decode(_parse(payload)))

    # -- Execution plumbing, used by the task -----------------------------------------

    def close(self) -> None:
        """End the execution: later use of this context is an error."""
        self._active = False

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

    # -- Failures ---------------------------------------------------------------------

    def _resume_attempts(
        self, index: int, name: str, policy: RetryPolicy
    ) -> tuple[Attempts | None, dict[str, Any] | None]:
        """Return the step's failed attempts so far, counting worker deaths among them.

        Also returns the error to journal instead of running the step, when earlier
        executions left it unfinishable: an interrupted at-most-once step, or one whose
        worker died more often than its policy allows.
        """
        resume = self._resume
        if resume is None or index != self._resume_at:
            return None, None
        self._resume = None
        now = time.time()
        if resume.guard == index:
            interrupted = StepInterruptedError(
                f"an execution of invocation {self._id} died inside at-most-once step "
                f"{name!r}; it may or may not have taken effect, so it is not run again",
                error_type="StepInterruptedError",
            )
            return None, error_record(interrupted)
        attempts = None
        if resume.attempt:
            recorded = Attempts.from_json(resume.attempt)
            if (recorded.index, recorded.name) == (index, name):
                attempts = recorded
        if not resume.crashes:
            return attempts, None
        lost = {
            "type": WORKER_LOST,
            "message": f"the worker died while step {name!r} ran, before it was journaled "
            "(SIGKILL, out of memory or a crash)",
        }
        if attempts is None:
            attempts = Attempts(index, name, resume.crashes, now, lost)
        else:
            attempts = attempts.after(lost, resume.crashes)
        verdict = judge(policy, attempts, None, now, random.random)
        if verdict.give_up:
            return attempts, {
                **lost,
                "metadata": {"gave_up": verdict.reason},
                "attempts": attempts.failures,
            }
        # Run it again now, without the policy's delay: the redelivery was the retry, as
        # reject_on_worker_lost intends. This start already counts if it dies too.
        return attempts, None

    def _retry_or_give_up(
        self,
        index: int,
        name: str,
        policy: RetryPolicy,
        attempts: Attempts | None,
        exc: Exception,
        started_at: float,
        codec: Codec[Any],
    ) -> Any:
        """Give up (journal a terminal error) or record the attempt and retry.

        Returns only the outcome another execution journaled for this step first.
        """
        now = time.time()
        error = {"type": type(exc).__name__, "message": str(exc)}
        if attempts is None:
            attempts = Attempts(index, name, 1, now, error)
        else:
            attempts = attempts.after(error)
        verdict = judge(policy, attempts, exc, now, random.random)
        if verdict.give_up:
            record = {
                **error,
                "metadata": {"gave_up": verdict.reason},
                "attempts": attempts.failures,
            }
            return self._journal_error(index, name, started_at, record, codec)
        existing = self._store.record_attempt(self._id, index, attempts.to_json())
        if existing is not None:
            return self._adopt(index, name, existing, codec)
        raise StepRetry(name, verdict.delay, exc)

    def _journal_error(
        self, index: int, name: str, started_at: float, error: dict[str, Any], codec: Codec[Any]
    ) -> Any:
        """Journal a terminal error for the step and raise it.

        Returns only the outcome another execution journaled for this step first.
        """
        entry = encode_entry(
            "run", name, started_at, time.time(), codec.name, error=error,
            attempts=error.get("attempts", 1),
        )  # fmt: skip
        ends_attempts = error.get("attempts", 1) > 1 or error.get("type") == "StepInterruptedError"
        if not self._commit(index, entry, ends_attempts):
            return self._replay(index, "run", name, codec)
        self._advance(index)
        raise terminal_error_from(error)

    def _commit(self, index: int, entry: str, ends_attempts: bool) -> bool:
        """Journal ``entry`` at ``index``; False if another execution's entry was first.

        Either way the entry now at ``index`` is kept, so that replay can reach it.
        """
        existing = self._store.append(self._id, index, entry, ends_attempts)
        self._entries.append(entry if existing is None else existing)
        return existing is None

    # -- Replay -----------------------------------------------------------------------

    def _adopt(self, index: int, name: str, existing: str, codec: Codec[Any]) -> Any:
        """Replay the entry another execution journaled first: its outcome is the one."""
        self._entries.append(existing)
        return self._replay(index, "run", name, codec)

    def _replay(self, index: int, kind: str, name: str, codec: Codec[Any]) -> Any:
        entry = _parse(self._entries[index])
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
        if entry["s"] == "error":
            raise terminal_error_from(entry["e"])
        return codec.decode(entry["v"])

    def _advance(self, index: int) -> None:
        self._position = index + 1
        self._rand.at_position(index + 1)

    def _mismatch(self, index: int, recorded: str, asked: str) -> NoReturn:
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
        self.paused_by = NonDeterminismError(message)
        raise self.paused_by


def terminal_error_from(record: dict[str, Any]) -> TerminalError:
    """Rebuild the ``TerminalError`` that a journaled error record describes."""
    cls = StepInterruptedError if record.get("type") == "StepInterruptedError" else TerminalError
    return cls(
        record.get("message", ""),
        record.get("metadata") or {},
        error_type=record.get("type"),
        attempts=record.get("attempts", 1),
    )


def _checked(policy: Any) -> RetryPolicy:
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(
            f"ctx.run(retry={policy!r}): retry takes a RetryPolicy, "
            "e.g. RetryPolicy(max_attempts=5, initial_interval=0.5)."
        )
    return policy
