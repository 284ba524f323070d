"""Waking suspended invocations: what is stored to re-publish one, and the publishing.

A suspended invocation keeps its call (task name, arguments, execution options) in
its metadata. When what it awaits completes (a timer is due, a child finished, an
awakeable was resolved), a wake-up is due in the wake-ups sorted set; whoever claims
it (the wake-up component of a worker, or the process that completed it) publishes
the call again under the same task id, then acknowledges the claim. A claim whose
publisher died comes due again after its visibility window: a wake-up is never lost,
and one published twice runs nothing twice (the lease, first-writer-wins entries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from kombu.utils import json as kombu_json

from celery_durable.errors import ValueTooLargeError

logger = logging.getLogger("celery_durable")

# Typed once here: kombu leaves them untyped.
_dumps: Callable[..., str] = kombu_json.dumps
_loads: Callable[[str], Any] = kombu_json.loads

#: Execution options a re-published call keeps, as Celery's ``send_task`` takes them.
#: Not ``expires``: a wake-up comes later than the first delivery by design, and an
#: expiry meant for the first delivery would discard it.
_OPTIONS = frozenset({
    "task_id", "root_id", "parent_id", "group_id", "group_index", "shadow", "chord", "chain",
    "link", "link_error", "soft_time_limit", "time_limit", "headers", "retries",
    "reply_to", "replaced_task_nesting", "ignore_result", "priority", "queue", "exchange",
    "routing_key",
})  # fmt: skip

#: Options whose value here is what publishing without them gives: left out of a call.
_IMPLIED: dict[str, Any] = {"headers": {}, "retries": 0, "replaced_task_nesting": 0}
_NONE = object()

#: Seconds a claimed wake-up stays hidden from other claimers while it is published.
CLAIM_VISIBILITY = 30.0


def encode_call(task_name: str, args: Any, kwargs: Any, options: Mapping[str, Any]) -> str:
    """Return the JSON of a call, as a wake-up re-publishes it (kombu's JSON types too).

    Kept short, since every invocation stores one: no spaces, and no option that says
    what publishing without it says (``_IMPLIED``; ``root_id`` when it is ``task_id``,
    which ``decode_call`` puts back)."""
    kept = {
        k: v
        for k, v in options.items()
        if k in _OPTIONS and v is not None and _IMPLIED.get(k, _NONE) != v
    }
    if kept.get("root_id") is not None and kept.get("root_id") == kept.get("task_id"):
        del kept["root_id"]
    call = {"task": task_name, "args": list(args or ()), "kwargs": dict(kwargs or {}),
            "options": kept}  # fmt: skip
    return _dumps(call, separators=(",", ":"))


def check_call_size(call: str, limit: int, task_name: str, refused: str) -> None:
    """Refuse a call larger than ``limit`` bytes, saying what was ``refused``.

    An invocation keeps its call (to wake it, resume it, restart it) and every start and
    finish moves it: arguments count against ``durable_max_value_bytes`` as values do.

    Raises:
        ValueTooLargeError: it is larger.
    """
    # A str of n characters is n to 4n bytes in UTF-8: count the bytes only near the limit.
    if len(call) * 4 <= limit or len(call.encode()) <= limit:
        return
    raise ValueTooLargeError(
        f"the arguments of {task_name} are {len(call.encode())} bytes once stored (with the "
        f"task name and options), more than durable_max_value_bytes={limit}: {refused}. An "
        "invocation keeps its call to wake, resume or restart it, and Redis moves it at "
        "every start and finish: pass a reference to large data (a file store, a database "
        "key) instead of the data, or raise the setting."
    )


def check_arguments_size(task_name: str, args: Any, kwargs: Any, limit: int) -> None:
    """Refuse arguments whose call would be over ``limit`` bytes, before anything is sent.

    Raises:
        ValueTooLargeError: they are larger.
    """
    try:
        call = encode_call(task_name, args, kwargs, {})
    except (TypeError, ValueError):
        return  # not JSON: what stores the call says so, as it always did
    check_call_size(call, limit, task_name, "nothing was sent")


def decode_call(call: str) -> dict[str, Any]:
    """Return a stored call as ``encode_call`` took it: ``task``, ``args``, ``kwargs``,
    ``options``."""
    decoded: dict[str, Any] = _loads(call)
    options = decoded["options"]
    if "task_id" in options and "root_id" not in options:
        options["root_id"] = options["task_id"]
    for name, value in _IMPLIED.items():
        options.setdefault(name, type(value)() if isinstance(value, dict) else value)
    return decoded


def publish(app: Any, call: str) -> None:
    """Publish a stored call again, under its task id, to its queue."""
    decoded = decode_call(call)
    app.send_task(decoded["task"], decoded["args"], decoded["kwargs"], **decoded["options"])


def publish_due(app: Any, store: Any, limit: int = 100) -> float:
    """Claim due wake-ups and publish them; return seconds until the next one (-1: none).

    Raises:
        JournalError: the journal's Redis could not be reached to claim.
    """
    claimed, until_next = store.claim_wakeups(limit, CLAIM_VISIBILITY)
    for task_id, claim in claimed:
        try:
            state = store.wake_state(task_id)
            # A paused one has a wake-up only when an operator released it: a cancel.
            if state is not None and state[0] in ("suspended", "paused") and state[1]:
                publish(app, state[1])
                logger.info("celery-durable: woke invocation %s", task_id)
            store.ack_wakeup(task_id, claim)
        except Exception as exc:
            # The claim runs out and the wake-up comes due again: nothing is lost.
            logger.warning("celery-durable: could not wake invocation %s: %s", task_id, exc)
    return float(until_next)
