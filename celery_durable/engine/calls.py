"""Child calls: ``ctx.call`` starts another task exactly once and awaits its outcome.

The child's task id is derived from the parent's id and the journal position, so
every replay names the same child. The call is journaled before the child is
published, and a marker after; a replay publishes again only a child whose marker is
missing (its publisher died in between). A DurableTask child sent twice under its id
runs once; a plain child could run twice only if the parent's worker died between
the broker taking it and that marker. The child's outcome comes back through
Celery's ``link``/``link_error`` (``Host.publish_call``) into the parent's
completions, so the result backend's expiry does not matter on later replays.

A child's id is easy to guess, so it proves nothing: the call journals a secret token
of 128 random bits, which only the child's own message carries (in its callbacks),
and its outcome is recorded only with that token, as an awakeable's completion is.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from celery_durable.engine.execution import Execution
from celery_durable.engine.futures import FromOutside
from celery_durable.errors import ContextError


def child_id(parent_id: str, index: int) -> str:
    """The task id of the child started at journal ``index`` of ``parent_id``."""
    return f"{parent_id}/{index}"


def call(
    ex: Execution, signature: Any, name: str | None, timeout: float | None = None
) -> FromOutside[Any]:
    """Start the child ``signature`` once; return the future of its outcome."""
    host = ex.host
    if host is None:
        raise ContextError("ctx.call() needs a task system to start the child in.")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ContextError(
            f"ctx.call(timeout={timeout!r}): a timeout is a finite number of seconds above 0, "
            "from the child's start to its deadline; leave it out for none."
        )
    task_name = host.describe_call(signature, timeout)
    name = name or task_name
    index = ex.position
    child = child_id(ex.id, index)
    if index < len(ex.entries):
        recorded = ex.expect(index, "call", name)["v"]
        ex.advance(index)
        if ex.observer is not None:
            ex.observer.step_replayed(ex, index, "call", name, 1, recorded, None)
        sent = f"{index}:sent" in ex.completions or str(index) in ex.completions
        if not sent:
            # A call journaled before calls had a token is completed by its child's id.
            token = recorded.get("token")
            if not isinstance(token, str):
                token = ""
            _publish(ex, host, signature, recorded["id"], index, token, recorded.get("timeout"))
    else:
        token = secrets.token_hex(16)
        value: dict[str, Any] = {"id": child, "task": task_name, "token": token}
        if timeout is not None:
            value["timeout"] = timeout
        index = ex.record("call", name, json.dumps(value))
        _publish(ex, host, signature, child, index, token, timeout)
    return FromOutside(ex, index, "call", name)


def _publish(
    ex: Execution,
    host: Any,
    signature: Any,
    child: str,
    index: int,
    token: str,
    timeout: float | None,
) -> None:
    ran_here = host.publish_call(signature, child, index, token, timeout)
    ex.store.mark_sent(ex.id, ex.fence, index)
    if ran_here:
        ex.refresh_completions()  # an eager child has completed already
