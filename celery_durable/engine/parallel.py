"""``run_async``: a step that runs in a thread of the execution, beside the body.

Its journal index is fixed when it is called. It retries under its own policy in its
thread (the execution holds its worker slot anyway while the body waits for it), and
its entry is committed in journal order, before its future completes: flush before
return. A replay hands back the journaled outcome without running it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from celery_durable.codec import Codec, resolve_codec
from celery_durable.engine.attempts import Attempts, judge
from celery_durable.engine.execution import Execution, checked_name
from celery_durable.engine.futures import Done, DurableFuture, InProcess, Outcome
from celery_durable.engine.observer import log_failure, log_retry
from celery_durable.engine.pausing import pause_exhausted
from celery_durable.engine.reopen import Owned
from celery_durable.engine.run import MISUSE, checked_policy
from celery_durable.errors import CodecError, TerminalError
from celery_durable.journal.entries import check_size, encode_entry
from celery_durable.journal.failures import rebuild, record_of
from celery_durable.policy import RetryPolicy


def run_async(
    ex: Execution,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: RetryPolicy | None,
    codec: str | Codec[Any] | None,
) -> DurableFuture[Any]:
    """Start ``fn`` as step ``name`` in a thread, or replay it; see ``DurableContext``."""
    checked_name(name, "run_async")
    chosen = ex.codec if codec is None else resolve_codec(codec)
    index = ex.position
    if index < len(ex.entries):
        entry = ex.expect(index, "run", name, chosen)
        outcome = _outcome_of(ex, index, entry, chosen)
        ex.advance(index)
        if index >= ex.own_from:  # an entry taken over from an earlier execution
            limit = (ex.policy if retry is None else checked_policy(retry)).max_attempts
            ex.owned[index] = Owned(name, limit=limit)
        if ex.observer is not None:
            error = None if outcome.ok else rebuild(outcome.error or {})
            ex.observer.step_replayed(
                ex, index, "run", name, entry.get("a", 1), outcome.value, error
            )  # fmt: skip
        return Done(ex, outcome, index)
    policy = ex.policy if retry is None else checked_policy(retry)
    # Only the body's thread knows the request that a pause must keep, to be resumed.
    call = ex.call() if policy.on_exhausted == "pause" else None
    ex.advance(index)  # the index is this step's now; later operations come after it
    carried = _carried_attempts(ex, index, name)

    def step() -> Outcome:
        return _run(ex, index, name, fn, args, kwargs, policy, chosen, call, carried)

    return InProcess(ex, ex.submit(index, step), index)


def _carried_attempts(ex: Execution, index: int, name: str) -> Attempts | None:
    """The attempts a retry of the body left for this step when it re-opened it."""
    resume = ex.resume
    if resume is None or not resume.attempt:
        return None
    return Attempts.from_json(resume.attempt).of_step(index, name)


def _run(
    ex: Execution,
    index: int,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    codec: Codec[Any],
    call: str | None = None,
    carried: Attempts | None = None,
) -> Outcome:
    started_at = time.time()
    attempts = carried
    observer = ex.observer
    while True:
        if observer is not None:
            observer.step_started(ex, index, "run", name, _tries(attempts) + 1)
        try:
            value = fn(*args, **kwargs)
        except TerminalError as exc:
            entry = _error_entry(name, started_at, codec, record_of(exc, _tries(attempts) + 1))
            break
        except MISUSE:
            raise
        except Exception as exc:
            now = time.time()
            error = {"type": type(exc).__name__, "message": str(exc)}
            if attempts is None:
                attempts = Attempts(index, name, 1, now, error, policy.max_attempts)
            else:
                attempts = attempts.after(error)
            verdict = judge(policy, attempts, exc, now, random.random)
            if verdict.give_up:
                if verdict.exhausted and call is not None:  # on_exhausted="pause"
                    pause_exhausted(ex, index, name, attempts, verdict.reason, call, exc)
                record = record_of(exc, attempts.failures)
                if attempts.failures > 1:
                    record["metadata"] = {"gave_up": verdict.reason}
                entry = _error_entry(name, started_at, codec, record)
                break
            log_retry(ex, index, name, attempts.failures, exc, verdict.delay)
            if observer is not None:
                observer.step_failed(ex, index, "run", name, attempts.failures, exc, verdict.delay)
            time.sleep(verdict.delay)
            continue
        try:
            payload = codec.encode(value)
        except CodecError as exc:
            raise CodecError(
                f"async step {name!r} (index {index}) of invocation {ex.id} returned a "
                f"{type(value).__name__} that its codec cannot store, so nothing was "
                f"journaled: {exc}"
            ) from exc.__cause__
        check_size(payload, ex.max_value_bytes, f"step {name!r} (index {index}) of {ex.id}")
        entry = encode_entry(
            "run", name, started_at, time.time(), codec.name, payload, attempts=_tries(attempts) + 1
        )
        break
    first = None if attempts is None else attempts.first_failure_at
    # The first of the steps a retry re-opened clears their attempt record.
    ends_attempts = carried is not None and carried.index == ex.resume_at
    ex.commit(
        index, entry, ends_attempts, Owned(name, limit=policy.max_attempts, first_failure_at=first)
    )
    committed = ex.entry(index)  # its own, or another execution's first
    outcome = _outcome_of(ex, index, committed, codec)
    if not outcome.ok or observer is not None:
        tries = int(committed.get("a", 1))
    if not outcome.ok:
        failure = rebuild(outcome.error or {})
        log_failure(ex, index, name, tries, failure)
        if observer is not None:
            observer.step_failed(ex, index, "run", name, tries, failure, None)
    elif observer is not None:
        took = time.time() - started_at
        observer.step_succeeded(ex, index, "run", name, tries, outcome.value, took)
    return outcome


def _tries(attempts: Attempts | None) -> int:
    return 0 if attempts is None else attempts.failures


def _error_entry(name: str, started_at: float, codec: Codec[Any], record: dict[str, Any]) -> str:
    attempts = int(record.get("attempts", 1))
    return encode_entry(
        "run", name, started_at, time.time(), codec.name, error=record, attempts=attempts
    )


def _outcome_of(ex: Execution, index: int, entry: dict[str, Any], codec: Codec[Any]) -> Outcome:
    finished = (entry["t"] / 1000) + entry["d"] / 1e6
    if entry["s"] == "error":
        return Outcome(False, error=entry["e"], at=finished)
    return Outcome(True, ex.decode(index, codec, entry["v"]), at=finished)
