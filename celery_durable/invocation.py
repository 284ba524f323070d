"""The life of one execution: begin (one round trip), run the body, finish (one more).

This is the policy between a task and the journal, free of Celery so that it can
be tested against the in-memory store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery_durable.codec import Codec
from celery_durable.engine.attempts import WORKER_LOST, Attempts
from celery_durable.engine.execution import Execution
from celery_durable.errors import (
    CodecError,
    InvocationCancelled,
    InvocationConflictError,
    UnreadableJournalError,
)
from celery_durable.fingerprint import describe_difference
from celery_durable.journal.entries import (
    Unreadable,
    check_size,
    encode_outcome,
    parse,
    read_outcome,
)
from celery_durable.journal.failures import ErrorRecord, rebuild, record_of
from celery_durable.journal.store import JournalStore, Started, StartRequest
from celery_durable.policy import RetryPolicy


@dataclass(frozen=True, slots=True)
class Finished:
    """An invocation that finished before this delivery: its recorded outcome."""

    status: str
    outcome: str | None
    """The outcome's JSON; None when there is none to give: replaced, or paused (it was
    paused before, and no operator released it; or it paused at this start, because
    workers kept dying and the task's policy pauses)."""

    def replay(self, codec: Codec[Any], app_codec: Codec[Any] | None = None) -> Any:
        """Return the recorded result, or raise the recorded terminal error.

        The outcome names the codec that stored it, and only the task's codec or the
        app's (``app_codec``, its ``durable_codec``) may decode it: a codec picked by
        what Redis holds would let whoever can write there pick pickle, and run code.

        Raises:
            Unreadable: the outcome is not one, names another codec, or does not decode.
        """
        if self.outcome is None:
            return None
        record = read_outcome(self.outcome)
        if record["s"] == "error":
            raise rebuild(record["e"])
        recorded = record.get("c", "json")
        readers = [c for c in (codec, app_codec) if c is not None and c.name == recorded]
        if not readers:
            app = f" nor the app (durable_codec {app_codec.name!r})" if app_codec else ""
            raise Unreadable(
                f"it names codec {recorded!r}, which neither the task (codec {codec.name!r})"
                f"{app} uses; a codec picked by what is stored would let whoever can write "
                "to the journal pick pickle and run code in this worker"
            )
        try:
            return readers[0].decode(record["v"])
        except Exception as exc:
            raise Unreadable(
                f"its value does not decode with codec {readers[0]!r} ({type(exc).__name__}: {exc})"
            ) from exc


def finished_outcome(
    store: JournalStore,
    task_id: str,
    finished: Finished,
    codec: Codec[Any],
    app_codec: Codec[Any] | None = None,
) -> Any:
    """Return the recorded result of a finished invocation, or raise its recorded error.

    Raises:
        UnreadableJournalError: its stored outcome cannot be read (see
            ``Finished.replay``); the invocation is paused, and nothing was decoded.
    """
    try:
        return finished.replay(codec, app_codec)
    except Unreadable as exc:
        message = (
            f"invocation {task_id} is {finished.status}, but its stored outcome is "
            f"unreadable: {exc}. celery-durable did not write it so (the journal was "
            "corrupted or edited by hand); it was not decoded. The invocation is paused: "
            "resume it to run its body again from its journal (its steps replay) and "
            f"record its outcome anew, `celery -A <your app> durable resume {task_id}`, or "
            f"forget it with `celery -A <your app> durable forget {task_id}`."
        )
        if finished.outcome is not None:
            store.pause_finished(task_id, finished.status, finished.outcome, message)
        raise UnreadableJournalError(message) from None


@dataclass(frozen=True, slots=True)
class Busy:
    """Another execution holds the invocation's lease for ``seconds`` more."""

    seconds: float
    holder: str


def begin(
    store: JournalStore,
    task_id: str,
    request: StartRequest,
    codec: Codec[Any],
    policy: RetryPolicy,
    retention: float,
    call: Callable[[], str] = str,
    execution_type: type[Execution] = Execution,
    journal_retention: float | None = None,
) -> Execution | Finished | Busy:
    """Start an execution: the execution to run the body in, or why there is none.

    ``call`` returns what re-publishes the invocation, stored if it fails here.
    ``execution_type`` is what the execution is made as (a test mode subclasses it).

    Raises:
        InvocationConflictError: ``task_id`` belongs to another task or other arguments.
    """
    started = store.start(task_id, request)
    if started.state == "run":
        execution = execution_type(store, task_id, started, codec, policy)
        lost = _crash_loop(task_id, started, policy)
        if lost is None:
            return execution
        if policy.on_exhausted == "pause":
            reason = (
                f"{lost['message']}. The task's policy says on_exhausted='pause': fix the cause, "
                f"then resume it with `celery -A <your app> durable resume {task_id}`."
            )
            store.pause(task_id, started.fence, reason, call())
            return Finished("paused", None)
        outcome = encode_outcome("json", None, lost)
        earlier = store.finish(
            task_id, started.fence, "failed", outcome, retention, call=call(),
            journal_retention=journal_retention,
        )  # fmt: skip
        return Finished(*(earlier or ("failed", outcome)))
    if started.state in ("done", "paused"):
        return Finished(started.status, started.outcome)
    if started.state == "busy":
        return Busy(started.busy_for, started.holder)
    if started.task_name != request.task_name:
        what = f"task {started.task_name!r}"
    else:
        what = f"other arguments ({describe_difference(started.fingerprint, request.fingerprint)})"
    raise InvocationConflictError(
        f"task id {task_id} already names an invocation of {what}, status "
        f"{started.status}; this delivery of {request.task_name!r} will not replay someone "
        "else's journal. Send it with a new task id, or first forget the old invocation: "
        f"celery_durable.forget_invocation(app, {task_id!r})."
    )


def _crash_loop(task_id: str, started: Started, policy: RetryPolicy) -> ErrorRecord | None:
    """The error to fail with when workers keep dying at the journal's frontier.

    A step at the frontier judges deaths by its own policy when it is reached again
    (``engine.run``). Deaths outside any step (after the last step, in a body with no
    steps, between steps) would loop forever under ``reject_on_worker_lost``: once they
    pass the limit (the step's recorded ``max_attempts``, else the task's policy), the
    invocation fails here.
    """
    frontier = len(started.entries)
    if not started.deaths or started.guard == frontier:
        return None
    failures, limit = started.deaths, policy.max_attempts
    if started.attempt:
        recorded = Attempts.from_json(started.attempt)
        if recorded.index == frontier:
            failures, limit = failures + recorded.failures, recorded.limit
    if limit is None or failures <= limit:
        return None
    message = (
        f"the worker died {failures} times in a row with invocation {task_id} at journal "
        f"position {frontier} (SIGKILL, out of memory or a crash, outside any step or in a "
        f"step that never journaled); giving up after max_attempts={limit}"
    )
    # A TerminalError named WorkerLostError: see engine.run's record of a death.
    return {
        "type": WORKER_LOST, "message": message, "metadata": {"gave_up": "crash loop"},
        "attempts": failures,
    }  # fmt: skip


def complete(
    store: JournalStore,
    ex: Execution,
    value: Any,
    codec: Codec[Any],
    retention: float,
    journal_retention: float | None = None,
) -> Any:
    """Journal the body's return value; return it as decoded from the journal.

    Raises:
        CodecError: the codec cannot store the value (nothing was journaled).
    """
    try:
        payload = codec.encode(value)
    except CodecError as exc:
        raise CodecError(
            f"invocation {ex.id} returned a {type(value).__name__} that its codec cannot "
            f"store: {exc}"
        ) from exc.__cause__
    check_size(payload, ex.max_value_bytes, f"the result of invocation {ex.id}")
    outcome = encode_outcome(codec.name, payload, None)
    # The call that an operator's restart publishes is stored already: at creation, and
    # by a retry that changed the arguments.
    earlier = store.finish(
        ex.id, ex.fence, "completed", outcome, retention, journal_retention=journal_retention,
        entries=ex.entries, held_call=ex.call(),
    )  # fmt: skip
    if earlier is None:
        return codec.decode(parse(payload))
    return finished_outcome(store, ex.id, Finished(*earlier), codec)  # another's, first


def fail(
    store: JournalStore,
    ex: Execution,
    exc: BaseException,
    retention: float,
    journal_retention: float | None = None,
) -> str:
    """Journal that the body failed for good with ``exc``, and its call, to resume it;
    return the status it ends with: ``cancelled`` for an ``InvocationCancelled`` (its own
    cancel, or a child's that it let through), else ``failed``.

    Raises:
        Paused: an async step paused the invocation meanwhile (or replay did, with
            ``NonDeterminismError`` or ``UnreadableJournalError``); that wins.
    """
    if ex.paused_by is not None:
        raise ex.paused_by
    status = "cancelled" if isinstance(exc, InvocationCancelled) else "failed"
    outcome = encode_outcome("json", None, record_of(exc))
    store.finish(
        ex.id, ex.fence, status, outcome, retention, call=ex.call(),
        journal_retention=journal_retention,
    )  # fmt: skip
    return status
