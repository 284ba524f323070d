"""Static checks of the operator API and versioning: run by mypy --strict, never by pytest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from celery_durable import (
    CancelledInvocation,
    ConcurrencySlots,
    DurableContext,
    DurableFuture,
    InvocationCancelled,
    Resumed,
    RetryPolicy,
    TerminalError,
    cancel_invocation,
    cancel_invocations,
    concurrency_slots,
    purge_invocations,
    restart_invocation,
    resume_invocation,
)


def checks(ctx: DurableContext, app: Any) -> None:
    assert_type(ctx.patched("charge-with-3ds"), bool)
    assert_type(ctx.deprecate_patch("charge-with-3ds"), None)
    RetryPolicy(max_attempts=3, on_exhausted="pause")
    RetryPolicy(on_exhausted="explode")  # type: ignore[arg-type]

    assert_type(resume_invocation(app, "id"), Resumed)
    assert_type(resume_invocation(app, "id", publish=False).previous_status, str)
    assert_type(restart_invocation(app, "id", 2, new_id="id-2"), str)
    assert_type(purge_invocations(app, "failed", timedelta(days=7)), list[str])
    assert_type(purge_invocations(app, "paused", 3600.0), list[str])

    assert_type(ctx.cancelled, bool)
    assert_type(ctx.call(object(), timeout=30), DurableFuture[Any])
    assert_type(cancel_invocation(app, "id"), CancelledInvocation)
    assert_type(cancel_invocation(app, "id", reason="why", kill=True).children, list[str])
    assert_type(cancel_invocations(app, task="t", status="suspended"), list[CancelledInvocation])
    assert_type(concurrency_slots(app, "acct").waiting, list[str])
    assert_type(concurrency_slots(app, "acct"), ConcurrencySlots)
    assert_type(InvocationCancelled.because("why").reason, str)
    assert isinstance(InvocationCancelled.because("why"), TerminalError)
    cancel_invocation(app, "id", kill="yes")  # type: ignore[arg-type]
