"""What the console's pages show, computed before a template sees it: the waterfall's
geometry, pretty JSON, errors, and shapes instead of values (``--hide-values``).

Everything here returns plain text or numbers; the templates escape all of it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery_durable import display
from celery_durable.admin import InvocationDetails, child_id
from celery_durable.journal.records import Invocation, Step

#: The most characters of one value the page shows; the JSON API has all of it.
PRETTY_CHARS = 20_000
#: Statuses after which an invocation does not change by itself.
FINISHED = frozenset({"completed", "failed", "cancelled", "replaced"})
#: The narrowest bar, in percent of the timeline, so that a 0.1 ms step is still seen.
MIN_BAR = 0.4
#: Members of a list or a dict a shape describes before it says how many more there are.
SHAPE_ITEMS = 20


#: Values whose JSON is at most this long are shown on one line; longer ones are indented.
ONE_LINE = 72
_compact = json.JSONEncoder(ensure_ascii=False, default=str, separators=(", ", ": ")).encode
#: A str as JSON text, in C (json's own, without ensure_ascii).
_string: Callable[[str], str] = json.encoder.encode_basestring


def pretty(value: Any, limit: int = PRETTY_CHARS) -> str:
    """``value`` as indented JSON (short parts on one line), cut to ``limit`` characters."""
    text = _indented(value, 0)
    if len(text) > limit:
        return f"{text[:limit]}\n… ({len(text) - limit:,} more characters: see the JSON API)"
    return text


def _indented(value: Any, depth: int) -> str:
    # json's C encoder, which it uses only without indent, writes each part in one go;
    # a 1,000-step page indents a value per step.
    if isinstance(value, str):
        return _string(value)
    text = _compact(value)
    if len(text) <= ONE_LINE or not isinstance(value, dict | list) or not value:
        return text
    pad, end = "  " * (depth + 1), "  " * depth
    if isinstance(value, dict):
        items = [f"{pad}{_string(str(k))}: {_indented(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    return "[\n" + ",\n".join(pad + _indented(v, depth + 1) for v in value) + "\n" + end + "]"


def shape(value: Any, depth: int = 0) -> Any:
    """What ``value`` looks like without what it says: types, lengths and dict keys."""
    if value is None or isinstance(value, bool):
        return value if value is None else "bool"
    if isinstance(value, int | float):
        return type(value).__name__
    if isinstance(value, str):
        return f"str ({len(value)} chars)"
    if depth >= 6:
        return f"{type(value).__name__} (nested)"
    if isinstance(value, list):
        items = [shape(item, depth + 1) for item in value[:SHAPE_ITEMS]]
        if len(value) > SHAPE_ITEMS:
            items.append(f"… {len(value) - SHAPE_ITEMS} more")
        return items
    if isinstance(value, dict):
        shaped = {str(k): shape(v, depth + 1) for k, v in list(value.items())[:SHAPE_ITEMS]}
        if len(value) > SHAPE_ITEMS:
            shaped["…"] = f"{len(value) - SHAPE_ITEMS} more keys"
        return shaped
    return type(value).__name__


def hidden_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """An error record without its message, arguments, metadata or traceback."""
    if error is None:
        return None
    return {
        "type": error.get("type"),
        "message": _hidden_message(error),
        "attempts": error.get("attempts", 1),
    }


def _hidden_message(error: dict[str, Any]) -> str:
    return f"(hidden: {len(str(error.get('message', '')))} chars)"


def hidden_record(record: dict[str, Any]) -> dict[str, Any]:
    """``Invocation.as_dict()`` with shapes for values and no error messages."""
    steps = [
        {**step, "value": shape(step["value"]), "error": hidden_error(step["error"])}
        for step in record["steps"]
    ]
    return {
        **record,
        "steps": steps,
        "result": shape(record["result"]),
        "error": hidden_error(record["error"]),
        "paused_reason": hidden_reason(record["paused_reason"]),
    }


def hidden_reason(reason: str | None) -> str | None:
    """A pause's reason may quote an error message: only say that it is hidden."""
    if reason is None:
        return None
    return "(hidden with --hide-values: a pause's reason may quote an error message)"


@dataclass(frozen=True, slots=True)
class ErrorView:
    type: str
    message: str
    attempts: int
    metadata: str
    traceback: str


def error_view(error: dict[str, Any] | None, hide: bool) -> ErrorView | None:
    if error is None:
        return None
    attempts = error.get("attempts")
    metadata = error.get("metadata") or {}
    return ErrorView(
        type=str(error.get("type") or "Error"),
        message=_hidden_message(error) if hide else str(error.get("message", "")),
        attempts=attempts if isinstance(attempts, int) else 1,
        metadata="" if hide or not metadata else pretty(metadata),
        traceback="" if hide else str(error.get("traceback") or ""),
    )


@dataclass(frozen=True, slots=True)
class StepView:
    """One row of the timeline."""

    index: int
    name: str
    kind: str
    status: str
    attempts: int
    left: float
    """Where the bar starts, in percent of the timeline."""
    width: float
    open_ended: bool
    """The bar runs to the timeline's end: an outcome still to come."""
    took: str
    retry_marks: list[float] = field(default_factory=list)
    """Where the marks of earlier attempts go, in percent, left of the bar."""


@dataclass(frozen=True, slots=True)
class StepDetail:
    """What a timeline row shows when it is opened (fetched then: a 1,000-step page
    would otherwise format a thousand values nobody opens)."""

    index: int
    name: str
    kind: str
    status: str
    attempts: int
    started: str
    finished: str
    value: str | None
    error: ErrorView | None
    child_id: str | None
    child_status: str | None
    """The child's status when it keeps a journal (a ``DurableTask``); None for a plain
    Celery task, whose outcome is the step's value."""
    awakeable_id: str | None


@dataclass(frozen=True, slots=True)
class Axis:
    ticks: list[tuple[float, str]]
    """(percent, label) of each tick."""


@dataclass(frozen=True, slots=True)
class InvocationView:
    inv: Invocation
    finished: bool
    steps: list[StepView]
    axis: Axis
    created: str
    updated: str
    lasted: str
    parent_id: str | None
    parent_index: int | None
    arguments: str | None
    queue: str | None
    result: str | None
    error: ErrorView | None
    paused_reason: str | None
    awaiting: list[dict[str, Any]]
    awakeables: dict[int, str]
    restartable: bool


def invocation_view(
    details: InvocationDetails, hide: bool, now: float | None = None
) -> InvocationView:
    """Everything the invocation page shows but what its rows show when opened."""
    inv = details.invocation
    now = time.time() if now is None else now
    finished = inv.status in FINISHED
    start = _start_of(inv)
    end = _end_of(inv, finished, now, start)
    span = max(end - start, 1e-3)
    steps = [_step_view(step, start, end, span, now, finished) for step in inv.steps]
    call = details.call
    arguments = queue = None
    if call is not None:
        arguments = pretty(shape(_args(call)) if hide else _args(call))
        queue = (call.get("options") or {}).get("queue")
    parent_id, _, index = inv.id.rpartition("/")
    return InvocationView(
        inv=inv,
        finished=finished,
        steps=steps,
        axis=Axis([(p, "+" + seconds_text(span * p / 100)) for p in (0, 25, 50, 75, 100)]),
        created=display.when(inv.created_at, now),
        updated=display.when(inv.updated_at, now),
        lasted=seconds_text(end - start) if inv.created_at else "-",
        parent_id=parent_id if parent_id and index.isdigit() else None,
        parent_index=int(index) if parent_id and index.isdigit() else None,
        arguments=arguments,
        queue=str(queue) if queue else None,
        result=None
        if inv.status != "completed"
        else pretty(shape(inv.result) if hide else inv.result),
        error=error_view(inv.error, hide),
        paused_reason=hidden_reason(inv.paused_reason) if hide else inv.paused_reason,
        awaiting=[_awaited(item, now) for item in inv.awaiting],
        awakeables=details.awakeable_ids,
        restartable=call is not None,
    )


def _value(value: Any, hide: bool) -> str:
    return pretty(shape(value) if hide else value)


def _args(call: dict[str, Any]) -> dict[str, Any]:
    return {"args": call.get("args", []), "kwargs": call.get("kwargs", {})}


def _start_of(inv: Invocation) -> float:
    stamps = [s.started_at.timestamp() for s in inv.steps if s.started_at is not None]
    if inv.created_at is not None:
        stamps.append(inv.created_at.timestamp())
    return min(stamps, default=time.time())


def _end_of(inv: Invocation, finished: bool, now: float, start: float) -> float:
    """Where the timeline ends: now for a live invocation, else its last change; a
    timer due later than that is drawn to the end, not stretching the axis."""
    stamps = [start]
    for step in inv.steps:
        for stamp in (step.started_at, step.finished_at):
            if stamp is not None and stamp.timestamp() <= now:
                stamps.append(stamp.timestamp())
    if not finished:
        stamps.append(now)
    elif inv.updated_at is not None:
        stamps.append(min(inv.updated_at.timestamp(), now))
    return max(stamps)


def _step_view(
    step: Step, start: float, end: float, span: float, now: float, finished: bool
) -> StepView:
    began = step.started_at.timestamp() if step.started_at is not None else start
    # A timer, child or awakeable still waiting when the invocation finished was never
    # needed (it lost an any(), or the body stopped waiting): nothing will come of it.
    unused = finished and step.status == "waiting"
    open_ended = not unused and (step.finished_at is None or step.finished_at.timestamp() > now)
    ended = end if open_ended else _stamp(step.finished_at, end)
    left = min(max((began - start) / span * 100, 0.0), 100.0 - MIN_BAR)
    width = max(min((ended - began) / span * 100, 100.0 - left), MIN_BAR)
    marks = [round(max(left - 0.7 * n, 0.0), 3) for n in range(1, min(step.attempts, 6))]
    return StepView(
        index=step.index,
        name=step.name,
        kind=step.kind,
        status="unused" if unused else step.status,
        attempts=step.attempts,
        left=round(left, 3),
        width=round(width, 3),
        open_ended=open_ended,
        took="not needed" if unused else _took(step, now),
        retry_marks=marks,
    )


def step_detail(
    details: InvocationDetails, index: int, hide: bool, child_status: str | None
) -> StepDetail | None:
    """What the timeline row of step ``index`` shows when opened; None if it has none.

    ``child_status`` is the status of the child it started, when that keeps a journal.
    """
    step = next((s for s in details.invocation.steps if s.index == index), None)
    if step is None:
        return None
    value = None
    if step.error is None and step.status not in ("waiting", "retrying"):
        value = _value(step.value, hide)
    return StepDetail(
        index=step.index,
        name=step.name,
        kind=step.kind,
        status=step.status,
        attempts=step.attempts,
        started=_clock(step.started_at),
        finished=_clock(step.finished_at),
        value=value,
        error=error_view(step.error, hide),
        child_id=child_id(details.invocation.id, index) if step.kind == "call" else None,
        child_status=child_status,
        awakeable_id=details.awakeable_ids.get(index),
    )


def _took(step: Step, now: float) -> str:
    if step.kind == "sleep" and step.finished_at is not None and step.started_at is not None:
        due = step.finished_at.timestamp()
        if due > now:
            return f"due in {seconds_text(due - now)}"
        return f"slept {seconds_text(due - step.started_at.timestamp())}"
    if step.finished_at is None:
        if step.started_at is None:
            return "-"
        return f"{seconds_text(now - step.started_at.timestamp())} so far"
    return display.took(step)


def _awaited(item: dict[str, Any], now: float) -> dict[str, Any]:
    due = item.get("until")
    view = {"kind": item.get("kind"), "name": item.get("name"), "index": item.get("index"),
            "due": None, "in": None}  # fmt: skip
    if item.get("kind") == "sleep" and due:
        stamp = float(due)
        view["due"] = display.clock(datetime.fromtimestamp(stamp, tz=UTC))
        view["in"] = seconds_text(stamp - now) if stamp > now else "now (waking)"
    return view


def seconds_text(seconds: float) -> str:
    """A duration for people: ``0.4ms``, ``12ms``, ``3.2s``, ``4m 05s``, ``2h 10m``, ``3d 04h``."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d {int(seconds % 86400 // 3600):02d}h"


def _clock(stamp: datetime | None) -> str:
    if stamp is None:
        return "-"
    return stamp.isoformat(" ", "milliseconds")[:23] + "Z"  # UTC: drop "+00:00"


def _stamp(stamp: datetime | None, default: float) -> float:
    return default if stamp is None else stamp.timestamp()
