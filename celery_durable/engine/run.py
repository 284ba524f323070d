"""The ``run`` operation: a step that runs a function once and journals its outcome."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from celery_durable.codec import JSON_SCALARS, PLAIN_JSON, Codec, resolve_codec
from celery_durable.engine.attempts import WORKER_LOST, Attempts, judge
from celery_durable.engine.execution import Execution, checked_name
from celery_durable.engine.observer import log_failure, log_retry
from celery_durable.engine.pausing import pause_exhausted
from celery_durable.engine.reopen import Owned
from celery_durable.errors import (
    CodecError,
    ConfigurationError,
    ContextError,
    NonDeterminismError,
    StepInterruptedError,
    StepRetry,
    TerminalError,
)
from celery_durable.journal.entries import check_size, encode_entry, parse
from celery_durable.journal.failures import ErrorRecord, rebuild, record_of
from celery_durable.journal.store import Cancelling
from celery_durable.policy import RetryPolicy

#: Errors of this library that a step's function may raise by misusing it.
MISUSE = (ContextError, CodecError, ConfigurationError, NonDeterminismError)


def run_step(
    ex: Execution,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: RetryPolicy | None,
    codec: str | Codec[Any] | None,
    at_most_once: bool,
) -> Any:
    """Run ``fn`` as step ``name``, or replay it; see ``DurableContext.run``."""
    checked_name(name, "run")
    chosen = ex.codec if codec is None else resolve_codec(codec)
    index = ex.position
    if index < len(ex.entries):
        if index >= ex.own_from:  # an entry taken over from an earlier execution
            policy = ex.policy if retry is None else checked_policy(retry)
            ex.owned[index] = Owned(name, at_most_once=at_most_once, limit=policy.max_attempts)
        return ex.replay(index, "run", name, chosen)

    policy = ex.policy if retry is None else checked_policy(retry)
    attempts = None
    if ex.resume is not None:
        attempts, final = _resume_attempts(ex, index, name, policy)
        if final is not None:
            if attempts is not None and policy.on_exhausted == "pause":  # deaths used it up
                why = final["metadata"]["gave_up"]
                pause_exhausted(ex, index, name, attempts, why, ex.call())
            owned = _owned(name, at_most_once, policy, attempts)
            return _journal_error(ex, index, name, time.time(), final, chosen, owned=owned)
    if at_most_once and (existing := ex.store.guard(ex.id, ex.fence, index)) is not None:
        return ex.adopt(index, "run", name, existing, chosen)

    started_at = time.time()
    failures = attempts.failures if attempts else 0
    observer = ex.observer
    if observer is not None:
        observer.step_started(ex, index, "run", name, failures + 1)
    ex.in_step = name
    try:
        value = fn(*args, **kwargs)
    except ex.passthrough:
        raise  # Celery's own control flow (a soft time limit, Retry, ...): not a failure
    except TerminalError as exc:
        error = record_of(exc, attempts=failures + 1)
        owned = _owned(name, at_most_once, policy, attempts)
        return _journal_error(ex, index, name, started_at, error, chosen, exc, owned)
    except MISUSE:
        raise  # a mistake in the code, not a failed attempt: retrying cannot help
    except Exception as exc:
        owned = _owned(name, at_most_once, policy, attempts)
        return _retry_or_give_up(ex, index, name, policy, attempts, exc, started_at, chosen, owned)
    finally:
        ex.in_step = None

    try:
        payload = chosen.encode(value)
    except CodecError as exc:
        raise CodecError(
            f"step {name!r} (index {index}) of invocation {ex.id} returned a "
            f"{type(value).__name__} that its codec cannot store, so nothing was "
            f"journaled: {exc}"
        ) from exc.__cause__
    check_size(payload, ex.max_value_bytes, f"step {name!r} (index {index}) of invocation {ex.id}")
    entry = encode_entry(
        "run", name, started_at, time.time(), chosen.name, payload, attempts=failures + 1
    )
    owned = _owned(name, at_most_once, policy, attempts)
    if not ex.commit(index, entry, at_most_once or attempts is not None, owned):
        return ex.replay(index, "run", name, chosen)
    ex.advance(index)
    if chosen is PLAIN_JSON and type(value) in JSON_SCALARS:
        result = value  # decoding its JSON would give it back as it is
    else:
        result = chosen.decode(parse(payload))
    if observer is not None:
        took = time.time() - started_at
        observer.step_succeeded(ex, index, "run", name, failures + 1, result, took)
    ex.reported(index)
    return result


def _resume_attempts(
    ex: Execution, index: int, name: str, policy: RetryPolicy
) -> tuple[Attempts | None, dict[str, Any] | None]:
    """Return the step's failed attempts so far, counting worker deaths among them.

    Also returns the error to journal instead of running the step, when earlier
    executions left it unfinishable: an interrupted at-most-once step, or one whose
    worker died more often than its policy allows.
    """
    resume = ex.resume
    if resume is None or index != ex.resume_at:
        return None, None
    ex.resume = None
    now = time.time()
    if resume.guard == index:
        interrupted = StepInterruptedError(
            f"an execution of invocation {ex.id} died inside at-most-once step "
            f"{name!r}; it may or may not have taken effect, so it is not run again",
            error_type="StepInterruptedError",
        )
        return None, record_of(interrupted)
    attempts = None
    if resume.attempt:
        recorded = Attempts.from_json(resume.attempt)
        if (recorded.index, recorded.name) == (index, name):
            attempts = recorded
    if not resume.deaths:
        return attempts, None
    # A TerminalError named WorkerLostError, not billiard's own type: a task failing with
    # that would make the worker requeue its message forever (reject_on_worker_lost).
    lost = {
        "type": WORKER_LOST,
        "message": f"the worker died while step {name!r} ran, before it was journaled "
        "(SIGKILL, out of memory or a crash)",
    }
    if attempts is None:
        attempts = Attempts(index, name, resume.deaths, now, lost, policy.max_attempts)
    else:
        attempts = attempts.after(lost, resume.deaths)
    verdict = judge(policy, attempts, None, now, random.random)
    if verdict.give_up:
        return attempts, {
            **lost,
            "metadata": {"gave_up": verdict.reason},
            "attempts": attempts.failures,
        }
    # Run it again now, without the policy's delay: the redelivery was the retry, as
    # reject_on_worker_lost intends. Record the deaths with the step's own limit first,
    # so that if this execution dies too, the next start judges them by this policy.
    ex.store.record_attempt(ex.id, ex.fence, index, attempts.to_json(), release=False)
    return attempts, None


def _retry_or_give_up(
    ex: Execution,
    index: int,
    name: str,
    policy: RetryPolicy,
    attempts: Attempts | None,
    exc: Exception,
    started_at: float,
    codec: Codec[Any],
    owned: Owned,
) -> Any:
    """Give up (journal a terminal error) or record the attempt and retry.

    Returns only the outcome another execution journaled for this step first.
    """
    now = time.time()
    error = {"type": type(exc).__name__, "message": str(exc)}
    if attempts is None:
        attempts = Attempts(index, name, 1, now, error, policy.max_attempts)
    else:
        attempts = attempts.after(error)
    verdict = judge(policy, attempts, exc, now, random.random)
    if verdict.give_up:
        if verdict.exhausted and policy.on_exhausted == "pause":
            pause_exhausted(ex, index, name, attempts, verdict.reason, ex.call(), exc)
        record = record_of(exc, attempts.failures)
        if attempts.failures > 1:
            record["metadata"] = {"gave_up": verdict.reason}
        return _journal_error(ex, index, name, started_at, record, codec, exc, owned)
    ex.drain()  # the attempt releases the lease: async steps before this one go first
    existing = ex.store.record_attempt(
        ex.id, ex.fence, index, attempts.to_json(), retry_in=verdict.delay,
        cancellable=not ex.cancel_raised,
    )  # fmt: skip
    delay = verdict.delay
    if isinstance(existing, Cancelling):
        # Cancelled meanwhile: run again now, to raise the cancel at this step's start.
        ex.heard_of_cancel(existing.reason)
        delay = 0.0
    elif existing is not None:
        return ex.adopt(index, "run", name, existing, codec)
    log_retry(ex, index, name, attempts.failures, exc, delay)
    if ex.observer is not None:
        ex.observer.step_failed(ex, index, "run", name, attempts.failures, exc, delay)
    raise StepRetry(name, delay, exc)


def _journal_error(
    ex: Execution,
    index: int,
    name: str,
    started_at: float,
    error: ErrorRecord,
    codec: Codec[Any],
    cause: BaseException | None = None,
    owned: Owned | None = None,
) -> Any:
    """Journal a terminal error for the step and raise it, as ``rebuild`` makes it.

    Returns only the outcome another execution journaled for this step first.
    """
    attempts = error.get("attempts", 1)
    entry = encode_entry(
        "run", name, started_at, time.time(), codec.name, error=error, attempts=attempts
    )
    ends_attempts = attempts > 1 or error.get("type") == "StepInterruptedError"
    if not ex.commit(index, entry, ends_attempts, owned):
        return ex.replay(index, "run", name, codec)
    ex.advance(index)
    failure = rebuild(error)
    log_failure(ex, index, name, attempts, failure)
    if ex.observer is not None:
        ex.observer.step_failed(ex, index, "run", name, attempts, failure, None)
    ex.reported(index)
    raise failure from cause


def _owned(name: str, at_most_once: bool, policy: RetryPolicy, attempts: Attempts | None) -> Owned:
    """What a retry of the body needs to re-open the step's entry (``engine.reopen``)."""
    first = None if attempts is None else attempts.first_failure_at
    return Owned(name, at_most_once=at_most_once, limit=policy.max_attempts, first_failure_at=first)


def checked_policy(policy: Any) -> RetryPolicy:
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(
            f"ctx.run(retry={policy!r}): retry takes a RetryPolicy, "
            "e.g. RetryPolicy(max_attempts=5, initial_interval=0.5)."
        )
    return policy
