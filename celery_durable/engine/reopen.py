"""Celery's retry idiom: a ``Task.retry`` from the body runs the step it just ran again.

A body that catches a step's failure and retries (``raise self.retry(exc=exc)``), or
retries because of a step's value (a poll: ``if status != "done": raise
self.retry()``), expects that step to run again, as it would in a plain task. So the
retry *re-opens* the journal's last entry when this execution journaled it: the
release of the lease that the retry makes drops it, in one atomic write, and the
next delivery runs the step again while every entry before it replays. Its attempts
go on counting (``exc.attempts``, its policy's limits): the attempt record stored
with the drop is the one a failed attempt would have left.

What is re-opened, and what never is:

- A ``ctx.run`` or ``run_async`` step journaled by this execution, last in the
  journal: yes.
- ``ctx.all``/``ctx.any`` journaled by this execution over ``run_async`` steps that
  it ran, with nothing else between them: the combinator and all of its steps, the
  successful ones too, as one (they run again together; attempts go on counting for
  each). Over anything else (a timer, a child, an awakeable, another combinator),
  never.
- An at-most-once step, a child call (``ctx.call``: a child is started once under a
  task id of its own, so a retry belongs in the child), an awakeable, an entry that
  later entries follow, an entry this execution replayed: never. The retry then
  replays the same outcome, which is logged as a WARNING with the durable way to
  wait instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from celery_durable.engine.attempts import Attempts
from celery_durable.journal.entries import parse
from celery_durable.journal.store import Reopening

if TYPE_CHECKING:
    from celery_durable.engine.execution import Execution

logger = logging.getLogger("celery_durable")

#: The attempt record's error when the body retried after a step's value, not its failure.
RETRIED_ON_VALUE = {
    "type": "Retry",
    "message": "the task retried after this step's value; it runs again",
}

#: What to do instead, in every warning about a retry that re-opens nothing.
DURABLE_WAYS = (
    "To wait for something durably, raise RetryableError(retry_after=...) inside the step "
    "(its retry policy runs it again, after that delay), or loop in the body: "
    "`while ctx.run('check', check) != 'done': ctx.sleep(seconds)`."
)


@dataclass(slots=True)  # not frozen: one is made per step, and frozen ones cost more
class Owned:
    """What an execution knows of an entry it journaled (or took over, see
    ``Execution.own_from``): enough to re-open it."""

    name: str
    kind: str = "run"
    """``run`` (a step) or ``all``/``any`` (a combinator)."""
    at_most_once: bool = False
    limit: int | None = None
    """The step's ``max_attempts``."""
    first_failure_at: float | None = None
    """When the step first failed, if it had failed attempts before the journaled one."""
    members: tuple[int, ...] | None = None
    """A combinator's steps: their journal indexes, or None when one of its futures is
    not a ``run_async`` step."""


def plan(ex: Execution) -> Reopening | None:
    """What the body's retry re-opens, or None; logs why not where a step replays."""
    n = len(ex.entries)
    if n == 0 or ex.position != n:
        return None  # nothing journaled, or the body retried before reaching the end
    last = n - 1
    entry = parse(ex.entries[last])
    kind, name = entry["k"], entry["n"]
    owned = ex.owned.get(last)
    what = f"{_describe(kind)} {name!r} (journal index {last})"
    if kind in ("call", "awakeable"):
        why = "it comes from outside and is never run again by a retry" + (
            ": a child is started once, under a task id of its own, so retry inside the "
            "child task (its own retry policy, autoretry_for or self.retry)"
            if kind == "call"
            else ""
        )
        return _refuse(ex, what, why)
    if kind not in ("run", "all", "any"):
        return None  # a timer or a patch marker: the retry replays no value
    if owned is None:
        return _refuse(ex, what, "it was replayed from the journal, not run by this execution")
    if owned.at_most_once:
        return _refuse(ex, what, "it is an at-most-once step, which never runs twice")
    if kind == "run":
        return Reopening(last, ex.entries[last], _attempts(ex, last, owned).to_json())
    block = sorted(owned.members or ())
    if not block or block != list(range(block[0], last)) or any(i not in ex.owned for i in block):
        return _refuse(
            ex, what,
            "it waits for more than run_async steps that this execution ran just before "
            "it (a timer, a child, an awakeable, another combinator, a replayed step, or "
            "another operation among them)",
        )  # fmt: skip
    first, *rest = (_attempts(ex, i, ex.owned[i]) for i in block)
    return Reopening(block[0], ex.entries[last], replace(first, more=tuple(rest)).to_json())


def _attempts(ex: Execution, index: int, owned: Owned) -> Attempts:
    """The attempt record a re-opened step runs again with: its journaled attempts."""
    entry = parse(ex.entries[index])
    finished = entry["t"] / 1000 + entry["d"] / 1e6
    error = entry.get("e")
    last = RETRIED_ON_VALUE if error is None else {k: error.get(k) for k in ("type", "message")}
    first = owned.first_failure_at if owned.first_failure_at is not None else finished
    return Attempts(index, owned.name, int(entry.get("a", 1)), first, last, owned.limit)


def _describe(kind: str) -> str:
    return {"run": "step", "call": "child call", "all": "ctx.all", "any": "ctx.any"}.get(kind, kind)


def _refuse(ex: Execution, what: str, why: str) -> Reopening | None:
    logger.warning(
        "invocation %s: Task.retry() after %s: %s. The retry does not re-open it: "
        "every later delivery replays its recorded outcome. %s",
        ex.id, what, why, DURABLE_WAYS,
    )  # fmt: skip
    return None
