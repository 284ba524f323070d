"""One execution of an invocation: the replay cursor over its journal, and its writes.

An execution walks the journal from the top. While the code asks for operations the
journal already holds, it hands back their recorded outcome; from the first new
operation on, the operation families (``engine.run``, ...) run the code and commit
the outcome here before returning it.
"""

from __future__ import annotations

from typing import Any, NoReturn

from celery_durable.codec import Codec
from celery_durable.errors import ContextError, NonDeterminismError
from celery_durable.journal.entries import parse
from celery_durable.journal.failures import rebuild
from celery_durable.journal.store import JournalStore, Started
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom


class Execution:
    """The state of one execution: where replay stands, and what it may still write."""

    __slots__ = (
        "_active", "codec", "ended", "entries", "fence", "fingerprint", "id", "in_step",
        "max_value_bytes", "passthrough", "paused_by", "policy", "position", "rand", "resume",
        "resume_at", "store",
    )  # fmt: skip

    def __init__(
        self,
        store: JournalStore,
        invocation_id: str,
        started: Started,
        codec: Codec[Any],
        policy: RetryPolicy,
    ) -> None:
        self.store = store
        self.id = invocation_id
        self.fence = started.fence
        """The fencing token this execution took with the lease; every write carries it."""
        self.ended = False
        """True once this execution holds the lease no more (released, paused, finished,
        replaced, or lost): it must not end it again."""
        self.fingerprint = ""
        """The fingerprint of the arguments it runs with."""
        self.entries = started.entries
        self.codec = codec
        """The default codec of steps."""
        self.policy = policy
        """The retry policy of steps that name none."""
        self.passthrough: tuple[type[BaseException], ...] = ()
        """Errors that pass through a step untouched: the host's control flow."""
        self.max_value_bytes = 0
        """Largest encoded value a step may journal; 0 for no limit."""
        self.position = 0
        self.in_step: str | None = None
        self._active = True
        self.rand = DurableRandom(started.seed)
        # What earlier executions left about the first step this one will run.
        needs_resume = started.deaths or started.attempt or started.guard is not None
        self.resume: Started | None = started if needs_resume else None
        self.resume_at = len(started.entries)
        #: The error that paused the invocation, even if the body swallowed it.
        self.paused_by: NonDeterminismError | None = None

    @property
    def is_replaying(self) -> bool:
        return self.position < len(self.entries)

    def close(self) -> None:
        """End the execution: later use of its context is an error."""
        self._active = False

    def ensure_usable(self, what: str) -> None:
        """Raise ``ContextError`` when the context is used inside a step or after the end."""
        if self.in_step is not None:
            raise ContextError(
                f"{what} was used inside the function of step {self.in_step!r}. A step's "
                "function runs once and its value is journaled; durable operations inside it "
                "would not be. Call them from the task body, between steps."
            )
        if not self._active:
            raise ContextError(
                f"{what} was used after invocation {self.id} stopped executing. "
                "Use the context only inside the task body while it runs."
            )

    # -- Writing ------------------------------------------------------------------------

    def commit(self, index: int, entry: str, ends_attempts: bool) -> bool:
        """Journal ``entry`` at ``index``; False if another execution's entry was first.

        Either way the entry now at ``index`` is kept, so that replay can reach it.
        """
        existing = self.store.append(self.id, self.fence, index, entry, ends_attempts)
        self.entries.append(entry if existing is None else existing)
        return existing is None

    def adopt(self, index: int, kind: str, name: str, existing: str, codec: Codec[Any]) -> Any:
        """Replay the entry another execution journaled first: its outcome is the one."""
        self.entries.append(existing)
        return self.replay(index, kind, name, codec)

    # -- Replay -------------------------------------------------------------------------

    def replay(self, index: int, kind: str, name: str, codec: Codec[Any]) -> Any:
        """Return the recorded outcome at ``index``, or raise its recorded error.

        Raises:
            NonDeterminismError: the entry is another operation than the one asked for.
        """
        entry = parse(self.entries[index])
        if entry["k"] != kind or entry["n"] != name:
            self.mismatch(index, f"{entry['k']} {entry['n']!r}", f"{kind} {name!r}")
        recorded_codec = entry.get("c", "json")
        if recorded_codec != codec.name:
            self.mismatch(
                index,
                f"{kind} {name!r} stored with codec {recorded_codec!r}",
                f"the same step with codec {codec.name!r}",
            )
        self.advance(index)
        if entry["s"] == "error":
            raise rebuild(entry["e"])
        return codec.decode(entry["v"])

    def advance(self, index: int) -> None:
        self.position = index + 1
        self.rand.at_position(index + 1)

    def mismatch(self, index: int, recorded: str, asked: str) -> NoReturn:
        """Pause the invocation and raise: the code and the journal disagree at ``index``."""
        message = (
            f"invocation {self.id} is not deterministic at journal index {index}: "
            f"the journal recorded {recorded}, but the code asked for {asked}. "
            "Steps are matched by (index, kind, name), so renaming, adding or reordering "
            "steps breaks replay of invocations already running. It is paused: deploy code "
            "that asks for the recorded step and send the task again with the same task id "
            "and arguments to resume it from the journal, or forget it with "
            f"celery_durable.forget_invocation(app, {self.id!r})."
        )
        self._active = False
        self.ended = True
        self.store.pause(self.id, self.fence, message)
        self.paused_by = NonDeterminismError(message)
        raise self.paused_by
