"""Records for people reading journals: ``Invocation`` and ``Step``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


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
