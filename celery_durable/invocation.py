"""The life of one execution: begin (one round trip), run the body, finish (one more).

This is the policy between a task and the journal, free of Celery so that it can
be tested against the in-memory store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from celery_durable.codec import Codec
from celery_durable.engine.execution import Execution
from celery_durable.errors import CodecError, InvocationConflictError
from celery_durable.journal.entries import encode_outcome, error_record, terminal_error_from
from celery_durable.journal.store import FINISHED, JournalStore
from celery_durable.policy import RetryPolicy


@dataclass(frozen=True, slots=True)
class Finished:
    """An invocation that finished before this delivery: its recorded outcome."""

    status: str
    outcome: str

    def replay(self, codec: Codec[Any]) -> Any:
        """Return the recorded result, or raise the recorded terminal error."""
        record = json.loads(self.outcome)
        if record["s"] == "error":
            raise terminal_error_from(record["e"])
        return codec.decode(record["v"])


def fingerprint(task_name: str, args: Any, kwargs: Any) -> str:
    """Return a digest of a task's arguments, the same in every process, to catch reused ids."""
    text = json.dumps([list(args or ()), dict(kwargs or {})], sort_keys=True, default=_canonical)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _canonical(value: Any) -> Any:
    """Return a JSON form of an argument that does not depend on the process."""
    if isinstance(value, set | frozenset):  # iteration order follows per-process hashing
        return sorted(json.dumps(v, sort_keys=True, default=_canonical) for v in value)
    if isinstance(value, bytes | bytearray):
        return {"bytes": value.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__qualname__, "fields": dataclasses.asdict(value)}
    if hasattr(value, "model_dump"):  # a pydantic model
        return {"type": type(value).__qualname__, "fields": value.model_dump(mode="json")}
    if hasattr(value, "__dict__") and not any(
        "__repr__" in vars(c) for c in type(value).__mro__[:-1]
    ):
        # object's own repr holds the memory address: use the state instead
        return {"type": type(value).__qualname__, "fields": vars(value)}
    return repr(value)


def begin(
    store: JournalStore,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    codec: Codec[Any],
    policy: RetryPolicy,
    retries: int = 0,
) -> Execution | Finished:
    """Start an execution: the execution to run the body in, or the recorded outcome.

    ``retries`` is the delivery's Celery retry count (``request.retries``).

    Raises:
        InvocationConflictError: ``task_id`` belongs to another task or other arguments.
    """
    digest = fingerprint(task_name, args, kwargs)
    seed = int.from_bytes(os.urandom(8), "little")
    started = store.start(task_id, task_name, digest, seed, retries)
    if not started.created and (started.task_name, started.fingerprint) != (task_name, digest):
        what = (
            f"task {started.task_name!r}" if started.task_name != task_name else "other arguments"
        )
        raise InvocationConflictError(
            f"task id {task_id} already names an invocation of {what} "
            f"(status {started.status}); this delivery of {task_name!r} with args={args!r} "
            f"kwargs={kwargs!r} will not replay someone else's journal. Send it with a new "
            "task id, or first forget the old invocation: "
            f"celery_durable.forget_invocation(app, {task_id!r})."
        )
    if started.status in FINISHED and started.outcome is not None:
        return Finished(started.status, started.outcome)
    return Execution(store, task_id, started, codec, policy)


def complete(
    store: JournalStore, ex: Execution, value: Any, codec: Codec[Any], retention: float
) -> Any:
    """Journal the body's return value; return it as decoded from the journal.

    Raises:
        CodecError: the codec cannot store the value (nothing was journaled).
    """
    try:
        payload = codec.encode(value)
    except CodecError as exc:
        raise CodecError(
            f"invocation {ex.id} returned a {type(value).__name__} that its "
            f"codec cannot store: {exc}"
        ) from exc.__cause__
    outcome = encode_outcome(codec.name, payload, None)
    earlier = store.finish(ex.id, "completed", outcome, retention)
    return Finished(*(earlier or ("completed", outcome))).replay(codec)


def fail(store: JournalStore, ex: Execution, exc: BaseException, retention: float) -> None:
    """Journal that the body failed for good with ``exc``."""
    store.finish(ex.id, "failed", encode_outcome("json", None, error_record(exc)), retention)
