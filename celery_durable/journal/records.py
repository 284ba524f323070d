"""Records for people reading journals: ``Invocation`` and ``Step``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery_durable.journal.entries import Unreadable, read_completion, read_entry, read_outcome


@dataclass(frozen=True, slots=True)
class Step:
    """One journaled durable operation, as ``get_invocation`` reports it."""

    index: int
    name: str
    kind: str
    status: str
    """``completed``, ``failed``, ``retrying`` for a step waiting for its next attempt,
    ``paused`` for one whose policy was exhausted with ``on_exhausted="pause"``,
    ``waiting`` for a timer, child or awakeable whose outcome has not come yet, or
    ``unreadable`` for an entry (or an outcome from outside) that is not what
    celery-durable writes: its ``error`` says what is wrong; ``cancelled`` for the entry
    (kind ``cancel``) where the body raised a cancel."""
    attempts: int
    """Attempts so far, the first one included (worker deaths count as attempts)."""
    value: Any
    """The stored value as JSON (a pickled value stays base64 text). For a child or an
    awakeable, the outcome that came; for a timer, when it is due."""
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON types, times as ISO 8601 text (``celery durable show --json``)."""
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "value": self.value,
            "error": self.error,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation (one Celery task id) and its journal."""

    id: str
    task_name: str
    status: str
    steps: list[Step] = field(default_factory=list)
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    seed: int | None = None
    paused_reason: str | None = None
    awaiting: list[dict[str, Any]] = field(default_factory=list)
    """What a suspended invocation waits for: ``kind``, ``name``, ``index``; for a timer
    ``until``, when it is due (seconds since the epoch); for an awakeable read through
    ``get_invocation`` or ``list_invocations``, ``awakeable_id``, which completes it; for
    a slot of its concurrency key (kind ``slot``, named by the key), ``until``, when it
    looks again."""
    cancel_reason: str | None = None
    """Why it was cancelled, once it was (gracefully): its body raises, or raised,
    ``InvocationCancelled`` with it."""
    deadline: datetime | None = None
    """When it is cancelled unless it finished first (``durable_timeout``)."""
    concurrency_key: str | None = None
    """The concurrency key it holds a slot of, or waits for (``durable_concurrency_key``)."""
    concurrency_limit: int | None = None
    """How many invocations of that key may hold a slot at a time."""
    steps_until: datetime | None = None
    """When its steps (journal, completions, call) are dropped, or were: a finished
    invocation whose ``durable_journal_retention`` is shorter than its retention keeps
    only its outcome after that."""

    @property
    def steps_dropped(self) -> bool:
        """Its steps were dropped after its journal retention: ``steps`` is empty, and it
        can be neither resumed nor restarted; its outcome is kept."""
        return self.steps_until is not None and self.steps_until <= datetime.now(UTC)

    def as_dict(self) -> dict[str, Any]:
        """The invocation as JSON types, its steps as ``Step.as_dict``, times as ISO 8601
        text: the stable shape of ``celery durable show --json``."""
        return {
            "id": self.id,
            "task_name": self.task_name,
            "status": self.status,
            "steps": [step.as_dict() for step in self.steps],
            "result": self.result,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "seed": self.seed,
            "paused_reason": self.paused_reason,
            "awaiting": [_awaited(item) for item in self.awaiting],
            "cancel_reason": self.cancel_reason,
            "deadline": _iso(self.deadline),
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
            "steps_until": _iso(self.steps_until),
            "steps_dropped": self.steps_dropped,
        }


@dataclass(frozen=True, slots=True)
class InvocationSummary:
    """An invocation as a listing shows it, read without its journal: no values."""

    id: str
    task_name: str
    status: str
    step_count: int
    """Journal entries, and the step that waits for its next attempt (as ``steps`` counts)."""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    """When its metadata last changed; a step journaled since is not counted."""
    paused_reason: str | None = None
    awaiting: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON types, times as ISO 8601 text."""
        return {
            "id": self.id,
            "task_name": self.task_name,
            "status": self.status,
            "step_count": self.step_count,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "paused_reason": self.paused_reason,
            "awaiting": self.awaiting,
        }


def parse_summary(task_id: str, meta: dict[str, str], length: int) -> InvocationSummary:
    """Return the ``InvocationSummary`` of stored summary fields and a journal length."""
    return InvocationSummary(
        id=task_id,
        task_name=meta.get("task", ""),
        status=meta.get("status", "running"),
        step_count=length + (1 if meta.get("attempt") else 0),
        created_at=_when(meta.get("created_at")),
        updated_at=_when(meta.get("updated_at")),
        paused_reason=meta.get("paused_reason"),
        awaiting=json.loads(meta["awaiting"]) if meta.get("awaiting") else [],
    )


def parse_step(index: int, text: str, completion: str | None = None) -> Step:
    """Return the ``Step`` that a stored entry describes, with its outside completion.

    An entry or completion that is not what celery-durable writes (a corrupted journal)
    gives a step with status ``unreadable`` and an error that says what is wrong.
    """
    try:
        raw = read_entry(text)
    except Unreadable as exc:
        return _unreadable(index, text, f"journal entry {index} is unreadable: {exc}")
    kind, value, error = raw["k"], raw.get("v"), raw.get("e")
    status = "completed" if raw["s"] == "ok" else "failed"
    finished_at = _when(raw["t"] / 1000 + raw["d"] / 1e6)
    if kind in ("call", "awakeable"):
        if completion is None:
            status, value, finished_at = "waiting", None, None
        else:
            try:
                done = read_completion(completion)
            except Unreadable as exc:
                what = f"the outcome of journal entry {index} is unreadable: {exc}"
                status, value, finished_at = UNREADABLE, None, None
                error = {"type": "UnreadableJournalError", "message": what}
            else:
                status = "completed" if done["s"] == "ok" else "failed"
                value, error, finished_at = done.get("v"), done.get("e"), _when(done.get("t"))
    elif kind == "sleep":
        finished_at = _when(raw["v"]["until"] / 1000)
        if finished_at is not None and finished_at > datetime.now(UTC):
            status = "waiting"
    elif kind == "cancel":
        status = "cancelled"
    return Step(
        index=index,
        name=raw["n"],
        kind=kind,
        status=status,
        attempts=raw.get("a", 1),
        value=value,
        error=error,
        started_at=_when(raw["t"] / 1000),
        finished_at=finished_at,
    )


def parse_invocation(
    task_id: str, meta: dict[str, str], entries: list[str], completions: dict[str, str]
) -> Invocation:
    """Return the ``Invocation`` that stored metadata, entries and completions describe.

    A step that failed and waits for its retry is listed last, with status ``retrying``
    (``paused`` when the invocation is paused: its policy was exhausted); so are the
    steps a retry of the body re-opened, which run again. What cannot be read is shown
    as such (``parse_step``; an unreadable outcome is its ``error``), so that one
    corrupted journal never hides the others.
    """
    outcome: dict[str, Any] = {}
    if meta.get("outcome"):
        try:
            outcome = read_outcome(meta["outcome"])
        except Unreadable as exc:
            what = f"its stored outcome is unreadable: {exc}"
            outcome = {"e": {"type": "UnreadableJournalError", "message": what}}
    limit, _, key = meta.get("ckey", "").partition(":")
    steps = [parse_step(i, text, completions.get(str(i))) for i, text in enumerate(entries)]
    first = _json(meta.get("attempt"))
    # A retry of the body that re-opened several steps at once lists the others in "m".
    others = first.get("m") if isinstance(first, dict) else None
    attempts = [first, *(others if isinstance(others, list) else ())] if first else []
    for attempt in attempts:
        if not isinstance(attempt, dict):
            continue
        steps.append(
            Step(
                index=_int(attempt.get("i"), len(entries)),
                name=str(attempt.get("n", "?")),
                kind="run",
                status="paused" if meta.get("status") == "paused" else "retrying",
                attempts=_int(attempt.get("a"), 1),
                value=None,
                error=attempt.get("e") if isinstance(attempt.get("e"), dict) else None,
                started_at=_when(attempt.get("t")),
                finished_at=None,
            )
        )
    awaiting = _json(meta.get("awaiting"))
    return Invocation(
        id=task_id,
        task_name=meta.get("task", ""),
        status=meta.get("status", "running"),
        steps=steps,
        result=outcome.get("v"),
        error=outcome.get("e"),
        created_at=_when(meta.get("created_at")),
        # Steps do not touch the metadata (one write less per step), so the last one
        # may have finished after the metadata last changed. A waiting timer's
        # finished_at is when it is due, still to come: not a change.
        updated_at=_latest(
            _when(meta.get("updated_at")),
            steps[-1].finished_at if steps and steps[-1].status != "waiting" else None,
        ),
        seed=_int(meta.get("seed"), None),
        paused_reason=meta.get("paused_reason"),
        awaiting=[a for a in awaiting if isinstance(a, dict)] if isinstance(awaiting, list) else [],
        cancel_reason=meta.get("cancel"),
        deadline=_when(_int(meta.get("deadline"), 0) / 1000) if meta.get("deadline") else None,
        concurrency_key=key if limit else None,
        concurrency_limit=_int(limit, None) if limit else None,
        steps_until=_when(_int(meta.get("steps_until"), 0) / 1000)
        if meta.get("steps_until")
        else None,
    )


def _awaited(item: dict[str, Any]) -> dict[str, Any]:
    """An ``awaiting`` item as JSON types, ``until`` as ISO 8601 text."""
    until = item.get("until")
    if not isinstance(until, int | float) or isinstance(until, bool):
        return item
    return {**item, "until": _iso(_when(until))}


def awakeable_token(text: str) -> str | None:
    """The secret token of a stored awakeable entry; None if ``text`` is not a readable one."""
    try:
        entry = read_entry(text)
    except Unreadable:
        return None
    token: str = entry["v"]["id"]
    return token if entry["k"] == "awakeable" else None


#: The status of a step whose entry, or outcome from outside, cannot be read.
UNREADABLE = "unreadable"


def _unreadable(index: int, text: str, what: str) -> Step:
    """The step of an entry that cannot be read: its kind and name if they can be."""
    raw = _json(text)
    known = raw if isinstance(raw, dict) else {}
    kind, name = known.get("k"), known.get("n")
    return Step(
        index=index,
        name=name if isinstance(name, str) else "?",
        kind=kind if isinstance(kind, str) else "?",
        status=UNREADABLE,
        attempts=1,
        value=None,
        error={"type": "UnreadableJournalError", "message": what},
        started_at=None,
        finished_at=None,
    )


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _int(value: Any, default: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _latest(*stamps: datetime | None) -> datetime | None:
    return max((s for s in stamps if s is not None), default=None)


def _when(stamp: float | str | None) -> datetime | None:
    try:
        return None if stamp is None else datetime.fromtimestamp(float(stamp), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None  # not a time: a corrupted field, shown as unknown


def _iso(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()
