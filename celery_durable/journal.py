"""The journal: its records, their JSON form, and the protocol a journal store follows.

A journal entry is one JSON object per completed durable operation::

    {"k":"run","n":"reserve","t":1763726400123,"d":1530,"s":"ok","v":{"sku":"A1"}}

``k`` kind, ``n`` name, ``t`` start (milliseconds since the epoch), ``d`` duration
(microseconds), ``a`` attempts (left out when 1), ``c`` codec (left out for json),
``s`` status (``ok`` or ``error``), ``v`` the value as its codec wrote it, ``e`` the
error of a failed step. Entries are built by string joining because the per-step
path is hot and the payload is already JSON; they stay short because Redis keeps
every one of them.

An invocation's final outcome uses the same shape without ``k``, ``n`` and times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from celery_durable.errors import TerminalError

Status = Literal["running", "suspended", "completed", "failed", "paused"]
FINISHED: frozenset[str] = frozenset({"completed", "failed"})

# Names and error messages can hold anything (a lone surrogate from a file name);
# escaped to ASCII they always reach Redis.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode_entry(
    kind: str,
    name: str,
    started_at: float,
    finished_at: float,
    codec_name: str,
    payload: str | None = None,
    error: dict[str, Any] | None = None,
    attempts: int = 1,
) -> str:
    """Return the JSON text of a journal entry; ``payload`` is already-encoded JSON."""
    took = int((finished_at - started_at) * 1e6)
    head = f'{{"k":"{kind}","n":{_dumps(name)},"t":{int(started_at * 1000)},"d":{took}'
    if attempts != 1:
        head += f',"a":{attempts}'
    if codec_name != "json":
        head += f',"c":{_dumps(codec_name)}'
    if error is not None:
        return f'{head},"s":"error","e":{_dumps(error)}}}'
    return f'{head},"s":"ok","v":{payload}}}'


def encode_outcome(codec_name: str, payload: str | None, error: dict[str, Any] | None) -> str:
    """Return the JSON text of an invocation's final outcome."""
    codec = "" if codec_name == "json" else f',"c":{_dumps(codec_name)}'
    if error is not None:
        return f'{{"s":"error","e":{_dumps(error)}{codec}}}'
    return f'{{"s":"ok","v":{payload}{codec}}}'


def error_record(exc: BaseException, attempts: int | None = None) -> dict[str, Any]:
    """Return the JSON form of an error: its type name, message, details and attempts."""
    if isinstance(exc, TerminalError):
        return {
            "type": exc.error_type,
            "message": exc.message,
            "metadata": exc.metadata,
            "attempts": exc.attempts if attempts is None else attempts,
        }
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "metadata": {},
        "attempts": attempts or 1,
    }


@dataclass(frozen=True, slots=True)
class Started:
    """What one round trip at the start of an execution learns about its invocation."""

    created: bool
    """True when this execution created the invocation."""
    task_name: str
    fingerprint: str
    seed: int
    status: str
    outcome: str | None
    """The final outcome's JSON text once the invocation has finished."""
    entries: list[str]
    """The journal's entries as stored, parsed only when replay reaches them."""
    length: int = 0
    """The journal's length when the execution started; ``crashes``, ``attempt`` and
    ``guard`` are about the step at this index."""
    crashes: int = 0
    """Earlier executions that started where this one does and never ended cleanly."""
    attempt: str | None = None
    """The failed attempts of the next step, as JSON, if it failed before."""
    guard: int | None = None
    """Index of an at-most-once step that an earlier execution started."""


class JournalStore(Protocol):
    """Where journals live. Every method is one round trip to the store."""

    def start(
        self, task_id: str, task_name: str, fingerprint: str, seed: int, retries: int
    ) -> Started:
        """Create the invocation unless it exists; return its whole state.

        ``retries`` is the delivery's Celery retry count: a start with the same count
        as the last one is a redelivery, so the execution before it died.
        """
        ...

    def append(self, task_id: str, index: int, entry: str, ends_attempts: bool) -> str | None:
        """Store ``entry`` at ``index`` unless one is there (first writer wins).

        ``ends_attempts`` says the step had failed attempts or a guard, to be cleared.

        Returns:
            None when this call wrote the entry, else the entry already at ``index``.
        """
        ...

    def record_attempt(self, task_id: str, index: int, attempt: str) -> str | None:
        """Record failed attempts of the step at ``index``, the next journal entry.

        This also marks the execution as ending cleanly (it is about to retry).

        Returns:
            None when recorded, else the entry another execution journaled at ``index``.
        """
        ...

    def guard(self, task_id: str, index: int) -> str | None:
        """Mark the at-most-once step at ``index`` as started.

        Returns:
            None when marked, else the entry another execution journaled at ``index``.
        """
        ...

    def finish(
        self, task_id: str, status: str, outcome: str, retention: float
    ) -> tuple[str, str] | None:
        """Record the final outcome and let the invocation expire after ``retention``.

        Returns:
            None when this call finished the invocation, else the (status, outcome)
            that an earlier call recorded (first writer wins).
        """
        ...

    def pause(self, task_id: str, reason: str) -> None:
        """Mark the invocation paused: kept, without expiry, until someone acts."""
        ...

    def read(self, task_id: str) -> tuple[dict[str, str], list[str]] | None:
        """Return the invocation's metadata and raw entries, or None if it is gone."""
        ...

    def read_many(self, task_ids: Sequence[str]) -> list[tuple[dict[str, str], list[str]] | None]:
        """Return what ``read`` returns for each id, in one round trip."""
        ...

    def recent_ids(self, limit: int, offset: int = 0) -> list[str]:
        """Return invocation ids, newest first."""
        ...

    def forget_index(self, task_ids: Sequence[str]) -> None:
        """Drop ids of invocations that no longer exist from the listing."""
        ...


# -- Records for people reading journals ------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One journaled durable operation, as ``get_invocation`` reports it."""

    index: int
    name: str
    kind: str
    status: str
    """``completed``, ``failed``, or ``retrying`` for a step waiting for its next attempt."""
    attempts: int
    """Attempts so far, the first one included (worker deaths count as attempts)."""
    value: Any
    """The stored value as JSON (a pickled value stays base64 text)."""
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None


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


def parse_step(index: int, text: str) -> Step:
    """Return the ``Step`` that a stored entry describes."""
    raw = json.loads(text)
    return Step(
        index=index,
        name=raw["n"],
        kind=raw["k"],
        status="completed" if raw["s"] == "ok" else "failed",
        attempts=raw.get("a", 1),
        value=raw.get("v"),
        error=raw.get("e"),
        started_at=_when(raw["t"] / 1000),
        finished_at=_when(raw["t"] / 1000 + raw["d"] / 1e6),
    )


def parse_invocation(task_id: str, meta: dict[str, str], entries: list[str]) -> Invocation:
    """Return the ``Invocation`` that stored metadata and entries describe.

    A step that failed and waits for its retry is listed last, with status ``retrying``.
    """
    outcome = json.loads(meta["outcome"]) if meta.get("outcome") else {}
    steps = [parse_step(i, text) for i, text in enumerate(entries)]
    if meta.get("attempt"):
        attempt = json.loads(meta["attempt"])
        steps.append(
            Step(
                index=attempt["i"],
                name=attempt["n"],
                kind="run",
                status="retrying",
                attempts=attempt["a"],
                value=None,
                error=attempt["e"],
                started_at=_when(attempt["t"]),
                finished_at=None,
            )
        )
    return Invocation(
        id=task_id,
        task_name=meta.get("task", ""),
        status=meta.get("status", "running"),
        steps=steps,
        result=outcome.get("v"),
        error=outcome.get("e"),
        created_at=_when(meta.get("created_at")),
        # Steps do not touch the metadata (one write less per step), so the last one
        # may have finished after the metadata last changed.
        updated_at=_latest(_when(meta.get("updated_at")), steps[-1].finished_at if steps else None),
        seed=int(meta["seed"]) if "seed" in meta else None,
        paused_reason=meta.get("paused_reason"),
    )


def _latest(*stamps: datetime | None) -> datetime | None:
    return max((s for s in stamps if s is not None), default=None)


def _when(stamp: float | str | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(float(stamp), UTC)
