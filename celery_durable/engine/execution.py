"""One execution of an invocation: the replay cursor over its journal, and its writes.

An execution walks the journal from the top. While the code asks for operations the
journal already holds, it hands back their recorded outcome; from the first new
operation on, the operation families (``engine.run``, ``engine.timers``, ...) run the
code and commit the outcome here before returning it.

Entries are committed in journal order. A step started with ``run_async`` reserves its
index when it is called and commits from its thread when every entry before it is in;
any later commit waits for it, so the journal never has a gap. An async step that ends
without committing (it paused the invocation, its value could not be stored, the
journal refused the write) stops every later commit with its error: nothing waits for
an entry that will never come.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

from celery_durable.codec import Codec
from celery_durable.engine import cancel
from celery_durable.engine.host import Host
from celery_durable.engine.observer import Observer, log_pause
from celery_durable.errors import (
    ContextError,
    NonDeterminismError,
    Paused,
    UnreadableJournalError,
)
from celery_durable.journal.entries import Unreadable, encode_entry, read_entry
from celery_durable.journal.failures import ErrorRecord, rebuild
from celery_durable.journal.store import Cancelling, JournalStore, Started
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom

if TYPE_CHECKING:
    from celery_durable.engine.reopen import Owned

#: Threads of one execution's ``run_async`` steps.
ASYNC_STEPS = 8


class Execution:
    """The state of one execution: where replay stands, and what it may still write."""

    __slots__ = (
        "_active", "_async", "_committed", "_halted", "_pool", "_thread", "call", "cancel_entry",
        "cancel_raised", "cancel_reason", "cancelling", "codec", "combinators", "completions",
        "ended", "entries", "fence", "fingerprint", "host", "id", "in_step", "max_value_bytes",
        "observer", "ops", "own_from", "owned", "passthrough", "paused_by", "policy", "position",
        "rand", "resume", "resume_at", "store", "task_name",
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
        self.task_name = ""
        """The task's name, for log lines; set by the task layer."""
        self.fence = started.fence
        """The fencing token this execution took with the lease; every write carries it."""
        self.ended = False
        """True once this execution holds the lease no more (released, paused, finished,
        suspended, replaced, or lost): it must not end it again."""
        self.fingerprint = ""
        """The fingerprint of the arguments it runs with."""
        self.entries = started.entries
        self.completions = started.completions
        """What came from outside, by journal index (see ``Started.completions``)."""
        self.codec = codec
        """The default codec of steps."""
        self.policy = policy
        """The retry policy of steps that name none."""
        self.passthrough: tuple[type[BaseException], ...] = ()
        """Errors that pass through a step untouched: the host's control flow."""
        self.max_value_bytes = 0
        """Largest encoded value a step may journal; 0 for no limit."""
        self.host: Host | None = None
        self.observer: Observer | None = None
        """Who watches this execution (signals, spans, logs); None when nobody does."""
        self.call: Callable[[], str] = str
        """Returns what re-publishes the invocation (JSON), stored when it pauses, fails
        or suspends, so that it can be resumed or woken."""
        self.position = 0
        self.combinators = 0
        """Combinators made so far: their creation number tells their journal entries apart."""
        self.in_step: str | None = None
        self._active = True
        self._thread = threading.get_ident()
        self._committed = threading.Condition()
        self._async: dict[int, Future[Any]] = {}
        """The async steps by index, registered before their thread starts: once there is
        one, every commit takes ``_committed``."""
        self._halted: tuple[int, BaseException] | None = None
        """The first async step that ended without committing its entry, and why."""
        self._pool: ThreadPoolExecutor | None = None
        self.rand = DurableRandom(started.seed)
        # What earlier executions left about the first step this one will run.
        needs_resume = started.deaths or started.attempt or started.guard is not None
        self.resume: Started | None = started if needs_resume else None
        self.resume_at = len(started.entries)
        self.own_from = self.resume_at
        """Entries from this index on count as this execution's own, as if it had
        journaled them: the ones the execution before it journaled and then ended
        without acting on (``durable_replay_each_step``)."""
        self.owned: dict[int, Owned] = {}
        """What it knows of the entries it journaled, by index: what a retry of the
        body may re-open (``engine.reopen``)."""
        #: What paused the invocation (a ``NonDeterminismError``, or ``Paused`` when a
        #: policy was exhausted), raised again even if the body swallowed it.
        self.paused_by: BaseException | None = None
        # A graceful cancel (``engine.cancel``).
        self.ops = 0
        """Durable operations the body asked for so far, counted from its top."""
        self.cancel_reason: str | None = None
        """Why the invocation was cancelled, once heard of and not yet raised."""
        self.cancel_entry: tuple[int, int, ErrorRecord] | None = None
        """The cancel an earlier execution raised: where, at which operation, what."""
        self.cancel_raised = False
        """True once a cancel was raised in the body, by this or an earlier execution."""
        self.cancelling = False
        """True while a cancel is to be raised: the one test each operation makes."""
        if started.cancel is not None:
            self.cancel_entry = cancel.journaled(started.entries)
            if self.cancel_entry is None:
                self.cancel_reason = started.cancel
            self.cancel_raised = self.cancel_entry is not None
            self.cancelling = True

    @property
    def is_replaying(self) -> bool:
        return self.position < len(self.entries)

    @property
    def cancelled(self) -> bool:
        """Whether the invocation was cancelled, as far as this execution has heard."""
        return self.cancel_raised or self.cancel_reason is not None

    def heard_of_cancel(self, reason: str) -> None:
        """A reply said the invocation was cancelled: raise it at the next operation.

        Called from the body's thread, an async step's, or the lease's heartbeat.
        """
        if not self.cancel_raised and self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancelling = True

    def operation(self) -> None:
        """The body asks for a durable operation: where a cancel is raised (``engine.cancel``)."""
        self.ops += 1
        if self.cancelling:
            cancel.deliver(self)

    def close(self) -> None:
        """End the execution: later use of its context is an error."""
        self._active = False

    def ensure_usable(self, what: str) -> None:
        """Raise ``ContextError`` when the context is used inside a step or after the end."""
        if self.in_step is not None or threading.get_ident() != self._thread:
            step = f"step {self.in_step!r}" if self.in_step is not None else "an async step"
            raise ContextError(
                f"{what} was used inside the function of {step}. A step's function runs "
                "once and its value is journaled; durable operations inside it would not "
                "be. Call them from the task body, between steps."
            )
        if not self._active:
            raise ContextError(
                f"{what} was used after invocation {self.id} stopped executing. "
                "Use the context only inside the task body while it runs."
            )

    # -- Writing ------------------------------------------------------------------------

    def commit(
        self, index: int, entry: str, ends_attempts: bool, owned: Owned | None = None
    ) -> bool:
        """Journal ``entry`` at ``index``; False if another execution's entry was first.

        Waits until every entry before ``index`` is in (``run_async`` steps still
        running). Either way the entry now at ``index`` is kept, so replay can reach it.
        ``owned`` describes the entry, for a retry to re-open it if this call wrote it.

        Raises:
            BaseException: what ended an earlier async step before it committed, or
                paused the invocation: the entries before ``index`` will never all be in.
        """
        if not self._async:
            # Only the body writes, in order. Only the body's thread starts async steps,
            # and it registers each before its thread runs: no thread can be writing now.
            existing = self.store.append(self.id, self.fence, index, entry, ends_attempts)
            if isinstance(existing, Cancelling):
                self.heard_of_cancel(existing.reason)
                existing = None
            self.entries.append(entry if existing is None else existing)
        else:
            with self._committed:
                self._wait_for(index)
                existing = self.store.append(self.id, self.fence, index, entry, ends_attempts)
                if isinstance(existing, Cancelling):
                    self.heard_of_cancel(existing.reason)
                    existing = None
                self.entries.append(entry if existing is None else existing)
                self._committed.notify_all()
        if existing is not None:
            return False
        if owned is not None:
            self.owned[index] = owned
        return True

    def _wait_for(self, index: int) -> None:
        """Wait, holding ``_committed``, until the entries before ``index`` are in."""
        while len(self.entries) < index:
            if self.paused_by is not None:  # an async step before this one paused
                raise self.paused_by
            if self._halted is not None and self._halted[0] < index:
                raise self._halted[1]
            self._committed.wait()

    def record(self, kind: str, name: str, value: str, owned: Owned | None = None) -> int:
        """Journal a new operation whose value is already-encoded JSON; return its index."""
        index = self.position
        now = time.time()
        entry = encode_entry(kind, name, now, now, "json", value)
        if not self.commit(index, entry, False, owned):
            self.expect(index, kind, name)  # another execution's is the one that counts
        elif self.observer is not None:
            self.observer.step_succeeded(self, index, kind, name, 1, json.loads(value), 0.0)
        self.advance(index)
        self.reported(index)
        return index

    def reported(self, index: int) -> None:
        """The operation that journaled entry ``index`` told its observer, and hands
        control back to the body: where a test mode ends the execution."""

    def adopt(self, index: int, kind: str, name: str, existing: str, codec: Codec[Any]) -> Any:
        """Replay the entry another execution journaled first: its outcome is the one."""
        with self._committed:
            self._wait_for(index)  # async steps before it keep their places
            self.entries.append(existing)
            self._committed.notify_all()
        return self.replay(index, kind, name, codec)

    # -- Work in threads ----------------------------------------------------------------

    def submit(self, index: int, work: Callable[[], Any]) -> Future[Any]:
        """Run ``work`` (an async step that commits at ``index``) in this execution's pool."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(ASYNC_STEPS, thread_name_prefix=f"durable-{self.id}")
        future: Future[Any] = Future()
        # Registered before its thread exists, so that even a step that returns at once
        # commits under the lock and wakes the commits that wait for it.
        self._async[index] = future
        self._pool.submit(self._run_async, index, work, future)
        return future

    def _run_async(self, index: int, work: Callable[[], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = work()
        except BaseException as exc:
            with self._committed:
                if len(self.entries) <= index and (self._halted is None or index < self._halted[0]):
                    self._halted = (index, exc)
                    self._committed.notify_all()
            future.set_exception(exc)
        else:
            future.set_result(result)

    def drain(self) -> None:
        """Wait until every async step has committed its entry, or ended without; before
        the execution ends."""
        for index in sorted(self._async):
            self._async[index].exception()  # waits; its error is the body's to see
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def refresh_completions(self) -> None:
        """Read again what came from outside (one round trip)."""
        self.completions = self.store.completions(self.id)

    # -- Replay -------------------------------------------------------------------------

    def expect(
        self, index: int, kind: str, name: str, codec: Codec[Any] | None = None
    ) -> dict[str, Any]:
        """Return the parsed entry at ``index``, which must be ``kind`` ``name`` (and,
        given ``codec``, a value that codec stored).

        Raises:
            NonDeterminismError: it is another operation, or another codec stored it.
        """
        entry = self.entry(index)
        if entry["k"] != kind or entry["n"] != name:
            self.mismatch(index, f"{entry['k']} {entry['n']!r}", f"{kind} {name!r}")
        if codec is not None and entry.get("c", "json") != codec.name:
            self.mismatch(
                index,
                f"{kind} {name!r} stored with codec {entry.get('c', 'json')!r}",
                f"the same step with codec {codec.name!r}",
            )
        return entry

    def entry(self, index: int) -> dict[str, Any]:
        """Return the entry at ``index``, parsed.

        Raises:
            UnreadableJournalError: it is not an entry as this library writes it; the
                invocation is paused.
        """
        try:
            return read_entry(self.entries[index])
        except Unreadable as exc:
            self.unreadable(f"journal entry {index}", str(exc))

    def decode(self, index: int, codec: Codec[Any], data: Any) -> Any:
        """Return the value ``codec`` stored in the entry at ``index``.

        Raises:
            UnreadableJournalError: it does not decode; the invocation is paused.
        """
        try:
            return codec.decode(data)
        except Exception as exc:
            what = f"its value does not decode with codec {codec!r} ({type(exc).__name__}: {exc})"
            self.unreadable(f"journal entry {index}", what)

    def replay(self, index: int, kind: str, name: str, codec: Codec[Any]) -> Any:
        """Return the recorded outcome at ``index``, or raise its recorded error.

        Raises:
            NonDeterminismError: the entry is another operation than the one asked for.
            UnreadableJournalError: the entry is unreadable.
        """
        entry = self.expect(index, kind, name, codec)
        self.advance(index)
        observer = self.observer
        if entry["s"] == "error":
            error = rebuild(entry["e"])
            if observer is not None:
                observer.step_replayed(self, index, kind, name, entry.get("a", 1), None, error)
            raise error
        value = self.decode(index, codec, entry["v"])
        if observer is not None:
            observer.step_replayed(self, index, kind, name, entry.get("a", 1), value, None)
        return value

    def advance(self, index: int) -> None:
        self.position = index + 1
        self.rand.at_position(index + 1)

    def mismatch(self, index: int, recorded: str, asked: str) -> NoReturn:
        """Pause the invocation and raise: the code and the journal disagree at ``index``."""
        self._stop(NonDeterminismError.at(self.id, index, recorded, asked))

    def unreadable(self, where: str, what: str) -> NoReturn:
        """Pause the invocation and raise: ``where`` (an entry, a completion) cannot be
        read, because of ``what``."""
        self._stop(UnreadableJournalError.at(self.id, where, what))

    def _stop(self, error: NonDeterminismError | UnreadableJournalError) -> NoReturn:
        """Pause the invocation because of ``error``, end this execution, raise ``error``."""
        self._active = False
        self.ended = True
        # Only the body's thread knows the request; from a step's thread the stored call
        # is kept.
        call = self.call() if threading.get_ident() == self._thread else ""
        self.store.pause(self.id, self.fence, str(error), call)
        with self._committed:  # async steps waiting to commit stop too
            self.paused_by = error
            self._committed.notify_all()
        log_pause(self, str(error))
        if self.observer is not None:
            self.observer.invocation_paused(self, str(error))
        raise error

    def pause(self, reason: str, call: str, attempt: str = "") -> NoReturn:
        """Pause the invocation for an operator to resume, and end this execution.

        Called from the body's thread or from an async step's; ``call`` comes from the
        caller because only the body's thread knows the request. ``attempt`` records
        the failed attempts of the step that paused it. Commits still waiting for that
        step raise the same signal instead of waiting for ever.

        Raises:
            Paused: always, after the invocation is paused.
        """
        self.ended = True
        self.store.pause(self.id, self.fence, reason, call, attempt)
        if self.observer is not None:
            self.observer.invocation_paused(self, reason)
        signal = Paused(reason)
        with self._committed:
            self.paused_by = signal
            self._committed.notify_all()
        raise signal


def checked_name(name: object, operation: str) -> None:
    """Refuse a name that cannot identify an operation in the journal."""
    if type(name) is not str or not name:
        raise ContextError(
            f"ctx.{operation}(name={name!r}): a name must be a non-empty str, stable across "
            "deploys; it is part of the operation's identity in the journal."
        )
