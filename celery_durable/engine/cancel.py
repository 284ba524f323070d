"""Raising a graceful cancel in the body: once, where the body next asks for a durable
operation, and at the same place on every replay.

An execution hears of a cancel (``JournalStore.cancel``) without a round trip of its
own: from its start's reply, from the reply of each journal write, or from its lease's
renewal during a long step. It raises ``InvocationCancelled`` at the next durable
operation the body asks for, once it replays no more: a step's start, ``result()``, a
timer or sleep, ``all``/``any``, a child call, an awakeable. Where is journaled: an
entry of kind ``cancel`` at the journal's end, which holds the error and the number of
the operation that raised it, counted from the top of the body. A deterministic body
asks for the same operations in the same order on every replay, so a replay raises it
at the same operation, whether that operation journals an entry of its own (a step) or
not (``result()``).

The error is a ``TerminalError``: a saga's ``except TerminalError`` runs its
compensation, whose steps run and are journaled as any others; a later operation does
not raise it again. Before raising it, the execution cancels its children that have not
finished (``Host.cancel_children``), the ones started before it heard of the cancel
among them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

from celery_durable.errors import InvocationCancelled
from celery_durable.journal.entries import encode_entry, parse
from celery_durable.journal.failures import ErrorRecord, rebuild, record_of

if TYPE_CHECKING:
    from celery_durable.engine.execution import Execution

logger = logging.getLogger("celery_durable")

KIND = "cancel"
#: How every cancel entry starts (``encode_entry``): found without parsing the journal.
_HEAD = '{"k":"cancel",'


def journaled(entries: list[str]) -> tuple[int, int, ErrorRecord] | None:
    """The cancel an earlier execution raised: its journal index, its operation number
    and the error it raised; None if none did."""
    for index, text in enumerate(entries):
        if text.startswith(_HEAD):
            error: ErrorRecord = parse(text)["e"]
            return index, int(error.get("op", -1)), error
    return None


def deliver(ex: Execution) -> None:
    """At the body's durable operation number ``ex.ops``: raise the cancel if it is due
    here. Called only while ``ex.cancelling``."""
    if ex.cancel_entry is not None:
        index, op, error = ex.cancel_entry
        if op == ex.ops:
            _replay(ex, index, error)
        return
    if ex.cancel_reason is None or ex.position < len(ex.entries):
        return  # nothing heard, or still replaying: raised at the journal's end
    _raise_now(ex, ex.cancel_reason)


def _replay(ex: Execution, index: int, error: ErrorRecord) -> NoReturn:
    ex.cancelling = False
    ex.cancel_entry = None
    if ex.position != index:
        ex.mismatch(index, f"the cancel raised at durable operation #{ex.ops}",
                    f"durable operation #{ex.ops} at journal index {ex.position}")  # fmt: skip
    ex.advance(index)
    failure = rebuild(error)
    if ex.observer is not None:
        ex.observer.step_replayed(ex, index, KIND, KIND, 1, None, failure)
    raise failure


def _raise_now(ex: Execution, reason: str) -> NoReturn:
    ex.cancelling = False
    ex.cancel_raised = True
    failure = InvocationCancelled.because(reason)
    record = record_of(failure)
    record["op"] = ex.ops
    index = ex.position
    at = time.time()
    # It takes the place of the step that was next: that step's failed attempts (or its
    # at-most-once guard) are over with it.
    if not ex.commit(index, encode_entry(KIND, KIND, at, at, "json", error=record), True):
        ex.expect(index, KIND, KIND)  # another execution's entry is the one that counts
        _replay(ex, index, parse(ex.entries[index])["e"])
    ex.advance(index)
    _cancel_children(ex, reason)
    if ex.observer is not None:
        ex.observer.step_failed(ex, index, KIND, KIND, 1, failure, None)
    ex.reported(index)
    raise failure


def _cancel_children(ex: Execution, reason: str) -> None:
    """Cancel the children this execution's journal started that have not finished.

    A failure is logged, not raised: the cancel is journaled already, and whoever
    cancelled the invocation (an operator, the deadline sweep) cancelled its children too.
    """
    calls = [(i, text) for i, text in enumerate(ex.entries) if text.startswith('{"k":"call",')]
    if not calls or ex.host is None:
        return
    try:
        ex.refresh_completions()
        children: list[tuple[int, str]] = []
        for index, text in calls:
            if str(index) not in ex.completions:
                value: dict[str, Any] = parse(text)["v"]
                children.append((index, str(value["id"])))
        if children:
            ex.host.cancel_children(children, reason)
    except Exception as exc:
        logger.warning("celery-durable: invocation %s could not cancel its children: %s",
                       ex.id, exc)  # fmt: skip


def describe(error: ErrorRecord) -> str:
    """The reason a journaled cancel names, for people."""
    metadata = error.get("metadata") or {}
    return str(metadata.get("reason") or json.dumps(error.get("message")))
