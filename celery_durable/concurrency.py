"""Concurrency keys: at most ``durable_concurrency_limit`` invocations per key at a time.

A task names its key with ``durable_concurrency_key``: a parameter (its value, a str or
an int) or a callable of the task's arguments that returns a str. Before the body of an
invocation runs, its execution takes a slot of the key (``acquire_slot``); it holds it
from its first step until it finishes, through suspensions and pauses, so a later
execution of it finds it held. When every slot is taken the invocation waits, suspended,
holding no worker, with ``awaiting`` showing "a slot of key K". Waiters get slots in
arrival order: a finish hands its slot to the earliest waiter (``release_slots``), which
is told (``grant_slot``) and woken.

The key's holders and waiters live under the key's own hash tag; on a Redis Cluster in
another slot than the invocation's. No script touches both, so a worker can die between
two of them. Each such gap closes by itself:

- A holder that finished (or was forgotten) but died before giving its slot back, or
  whose execution died with its lease: holders are checked lazily (``check_holders``)
  when a waiter finds every slot taken. One gone, finished, or running with a lease
  that ran out no longer counts; the latter is fenced out, so that an execution
  frozen past its lease writes nothing more. The waiter gives those slots back and
  takes its turn.
- A waiter handed a slot whose grant never came (the releaser died between the two
  scripts): a waiter sleeps only until the earliest holder's lease would run out, or
  ``recheck`` seconds when no holder has a lease; then it asks again, and finds the
  slot its own.
- A waiter that was queued and died before it suspended: its message comes back (or
  the recovery sweep publishes it), and it asks again, keeping its place in line.

So a slot is never held past its holder's finish or lease by more than a waiter's
recheck, and never by two invocations at once while their leases hold.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from celery_durable.engine.execution import Execution
from celery_durable.errors import ConfigurationError, InvocationCancelled, JournalError, Suspended
from celery_durable.journal.store import JournalStore
from celery_durable.keys import DoneField
from celery_durable.wakeups import publish_due

logger = logging.getLogger("celery_durable")

#: Seconds past a holder's lease before a waiter looks again: by then it ran out.
MARGIN = 0.2
#: Seconds between a waiter's looks when no holder has a lease to watch, in leases.
RECHECK_LEASES = 2.0
#: ... and at least this long.
MIN_RECHECK = 5.0


def concurrency_of(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int]:
    """The concurrency key of an invocation of ``task`` with these arguments, and its
    limit; ``("", 0)`` for a task without ``durable_concurrency_key``.

    Raises:
        ConfigurationError: the task's options are wrong, or the key is not a str.
    """
    # From the class: a function set as a task option is no method of the task.
    option = getattr(type(task), "durable_concurrency_key", None)
    if option is None:
        return "", 0
    limit = getattr(task, "durable_concurrency_limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"{task.name}: durable_concurrency_limit={limit!r} must be a whole number of at "
            "least 1 (how many invocations of one key may run at a time)."
        )
    if callable(option):
        key = _call(task, option, args, kwargs)
        what = f"durable_concurrency_key ({getattr(option, '__name__', option)!r})"
    elif isinstance(option, str) and option:
        key = _argument(task, option, args, kwargs)
        what = f"the argument {option!r} (durable_concurrency_key)"
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
    else:
        raise ConfigurationError(
            f"{task.name}: durable_concurrency_key={option!r} must name a parameter of the "
            "task, or be a callable that takes the task's arguments and returns a str."
        )
    if not isinstance(key, str):
        raise ConfigurationError(
            f"{task.name}: {what} gave a {type(key).__name__}, not a str (or an int, for a "
            "parameter): a concurrency key is text. Return str(...) of what identifies it."
        )
    return key, limit


def _call(
    task: Any, option: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return option(*args, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(
            f"{task.name}: durable_concurrency_key {option!r} cannot take the task's "
            f"arguments ({exc}); give it the task's own parameters."
        ) from exc


def _argument(task: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        bound = inspect.signature(task.run).bind(*args, **kwargs)
    except TypeError:
        bound = None  # the call does not fit: Celery says so when it runs the body
    if bound is not None:
        bound.apply_defaults()
        if name in bound.arguments:
            return bound.arguments[name]
    raise ConfigurationError(
        f"{task.name}: durable_concurrency_key={name!r} names no parameter that this call "
        f"gives a value to; its parameters are {list(inspect.signature(task.run).parameters)}."
    )


def encode(key: str, limit: int) -> str:
    """What an invocation keeps of its key (``MetaField.CONCURRENCY_KEY``)."""
    return f"{limit}:{key}"


def decode(stored: str) -> tuple[str, int]:
    """``encode``'s key and limit."""
    limit, _, key = stored.partition(":")
    return key, int(limit)


def admit(
    app: Any, store: JournalStore, task_id: str, key: str, limit: int, lease_ttl: float
) -> dict[str, Any] | None:
    """Take a slot of ``key`` for ``task_id``, whose execution holds its lease.

    Returns:
        None when it holds one; else what it awaits, to suspend on (``Suspended``): the
        grant that hands it one, and a time to look again.
    """
    admission = store.acquire_slot(key, task_id, limit)
    if admission.state != "queued":
        return None
    lefts = store.check_holders(admission.holders)
    stale = [h for h, left in zip(admission.holders, lefts, strict=True) if left is None]
    if stale:
        logger.warning(
            "celery-durable: concurrency key %r: %s no longer hold their slots (finished, "
            "gone, or their execution died with its lease); handing them on",
            key, ", ".join(stale),
        )  # fmt: skip
        granted = store.release_slots(key, stale, limit)
        hand_on(app, store, key, limit, [g for g in granted if g[0] != task_id])
        if any(g[0] == task_id for g in granted):
            return None
    leases = [left for left in lefts if left is not None and left >= 0]
    wait = min(leases) + MARGIN if leases else max(MIN_RECHECK, RECHECK_LEASES * lease_ttl)
    return {
        "kind": "slot",
        "name": key,
        "index": DoneField.grant(admission.ticket),
        "until": time.time() + wait,
    }


def wait_for_slot(
    app: Any, store: JournalStore, ex: Execution, key: str, limit: int, lease_ttl: float
) -> None:
    """Before the body runs: return once the invocation holds a slot of ``key``.

    Raises:
        Suspended: every slot is taken; it waits, holding no worker.
        InvocationCancelled: it was cancelled while it waited, and never ran a step:
            it ends ``cancelled`` without running its body, with nothing to compensate.
    """
    waiting = admit(app, store, ex.id, key, limit, lease_ttl)
    if waiting is None:
        return
    if ex.cancel_reason is not None and not ex.entries:
        raise InvocationCancelled.because(ex.cancel_reason)
    raise Suspended([waiting])


def give_back(app: Any, store: JournalStore, task_id: str, key: str, limit: int) -> None:
    """``release``, after the invocation finished; a failure is left to the waiters' next
    look (the holder is finished: it no longer counts)."""
    if not key:
        return
    try:
        release(app, store, task_id, key, limit)
    except JournalError as exc:
        logger.warning("celery-durable: %s: could not give back its slot of key %r: %s",
                       task_id, key, exc)  # fmt: skip


def release(app: Any, store: JournalStore, task_id: str, key: str, limit: int) -> None:
    """Give back the slot (or place in line) of ``task_id``, which finished: hand it on."""
    granted = store.release_slots(key, [task_id], limit)
    hand_on(app, store, key, limit, granted)


def hand_on(
    app: Any, store: JournalStore, key: str, limit: int, granted: list[tuple[str, str]]
) -> None:
    """Tell the waiters handed a slot; a slot handed to one that is gone goes on."""
    woke = False
    while granted:
        gone = []
        for task_id, ticket in granted:
            told = store.grant_slot(task_id, DoneField.grant(ticket))
            if told == 0:
                gone.append(task_id)
            woke = woke or told == 2
        granted = store.release_slots(key, gone, limit) if gone else []
    if woke:
        publish_due(app, store)
