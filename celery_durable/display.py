"""How the ``celery durable`` commands show invocations to people: aligned tables,
previews of values and errors, ages, durations. No Redis, no Celery."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from celery_durable.journal.records import Invocation, InvocationSummary, Step

#: Colours of statuses, used only on a terminal.
COLOURS = {
    "completed": "green", "failed": "red", "paused": "yellow", "suspended": "cyan",
    "running": "blue", "retrying": "yellow", "waiting": "cyan", "cancelled": "magenta",
}  # fmt: skip
#: Characters of a value or error shown in a timeline row.
PREVIEW = 60
#: Where a long value starts under its label in ``show``.
INDENT = 12
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

#: ``style(text, **click_styles)``: colours text, or leaves it as it is.
Style = Callable[..., str]


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1h30m``.

    Raises:
        ValueError: ``text`` is not one, or is negative; the message says how to write it.
    """
    spelt = text.strip().lower()
    try:
        seconds = float(spelt)
    except ValueError:
        parts = _DURATION.findall(spelt)
        if not parts or "".join(n + u for n, u in parts) != spelt:
            raise ValueError(
                f"{text!r} is not a duration; write it as 90s, 15m, 12h, 7d, 2w, 1h30m or a "
                "number of seconds."
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError(f"{text!r} is negative.")
    return seconds


def printable(text: str) -> str:
    """``text`` safe for a terminal: what is not printable shown escaped.

    Ids, task and step names, errors and values come from users and journals. Control
    characters (escape sequences, newlines, carriage returns), bidirectional overrides
    and other invisible format characters would reach the terminal raw, change what it
    shows or break a table's lines; they read ``\\x1b``, ``\\n``, ``\\u202e`` instead.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def table(
    headers: list[str],
    rows: list[list[str]],
    style: Style,
    status_column: int,
    right: Sequence[int] = (),
) -> list[str]:
    """The lines of a table with aligned columns; headers bold, statuses coloured; every
    cell ``printable``."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    last = len(headers) - 1

    def line(cells: list[str], header: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            if i == last:
                text = text.rstrip()
            if header:
                text = style(text, bold=True)
            elif i == status_column:  # padded first: colours do not shift the columns
                text = style(text, fg=COLOURS.get(cell.strip()))
            out.append(text)
        return "  ".join(out).rstrip()

    return [line(headers, True), *(line(row, False) for row in rows)]


def awaits(inv: Invocation | InvocationSummary) -> str:
    """What an invocation waits for, in a few words (``ls``)."""
    if inv.status == "paused":
        return "an operator (resume)"
    return ", ".join(awaited(item) for item in inv.awaiting)


def awaited(item: dict[str, Any]) -> str:
    """One thing a suspended invocation waits for: kind, name, index, due time."""
    if item.get("kind") == "slot":
        return f"a slot of key {item.get('name')!r}"
    what = f"{item.get('kind')} {item.get('name')!r} (#{item.get('index')})"
    if item.get("kind") == "sleep" and item.get("until"):
        return f"{what} until {clock(datetime.fromtimestamp(float(item['until']), UTC))}"
    return what


def steps_line(inv: Invocation, now: float) -> str | None:
    """What ``show`` and the console say of steps kept for a journal retention of their
    own (``durable_journal_retention``): dropped, or until when they are kept."""
    if inv.steps_until is None:
        return None
    at = clock(inv.steps_until)
    if inv.steps_dropped:
        return f"dropped after journal retention ({at}); the outcome is kept"
    due = age(datetime.fromtimestamp(now, UTC), inv.steps_until.timestamp())
    return f"kept until {at} (journal retention, in {due}), then dropped"


def flow_lines(inv: Invocation, slots: Any, now: float) -> list[tuple[str, str]]:
    """``show``'s lines on flow control: a cancel, a deadline, a concurrency key (with
    ``slots``, a ``ConcurrencySlots``: who holds its slots and who waits)."""
    lines = []
    if inv.cancel_reason:
        lines.append(("cancelled", inv.cancel_reason))
    if inv.deadline is not None:
        at = inv.deadline.timestamp()
        due = f"in {age(datetime.fromtimestamp(now, UTC), at)}" if at > now else "passed"
        lines.append(("deadline", f"{clock(inv.deadline)} ({due})"))
    if inv.concurrency_key is not None and slots is not None:
        me = inv.id
        held = f"{len(slots.holders)} of {inv.concurrency_limit} slot(s) held"
        if me in slots.holders:
            where = "holds one"
        elif me in slots.waiting:
            where = f"waits, {slots.waiting.index(me) + 1} of {len(slots.waiting)} in line"
        else:
            where = "holds none"
        lines.append(("key", f"{inv.concurrency_key!r}: {where}; {held}"))
        lines.append(("holders", ", ".join(slots.holders) or "-"))
        lines.append(("waiting", ", ".join(slots.waiting) or "-"))
    return lines


def age(stamp: datetime | None, now: float) -> str:
    """How long ago, in its largest unit: ``45s``, ``3m``, ``2h``, ``4d``."""
    if stamp is None:
        return "-"
    seconds = max(0.0, now - stamp.timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def clock(stamp: datetime) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%SZ")


def when(stamp: datetime | None, now: float) -> str:
    """A time and how long ago it was."""
    return "-" if stamp is None else f"{clock(stamp)} ({age(stamp, now)} ago)"


def took(step: Step) -> str:
    """How long a step took, or ``-`` (a timer, or an outcome still to come)."""
    if step.started_at is None or step.finished_at is None or step.kind == "sleep":
        return "-"
    seconds = (step.finished_at - step.started_at).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def preview(step: Step) -> str:
    """A short preview of a step's value or error, on one line."""
    if step.error is not None:
        return short(error_text(step.error, tries=False), PREVIEW)
    if step.kind == "sleep" and step.finished_at is not None:
        return f"until {clock(step.finished_at)}"
    if step.status == "waiting":
        return "-"
    return short(as_json(step.value), PREVIEW)


def error_text(error: dict[str, Any], tries: bool = True) -> str:
    """``Type: message``, and the attempts it took when there were several."""
    attempts = error.get("attempts")
    after = ""
    if tries and isinstance(attempts, int) and attempts > 1:
        after = f" (after {attempts} attempts)"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}{after}"


def wrapped(text: str) -> str:
    """Long text under its label: lines of at most 100 characters, indented to the value,
    ``printable``."""
    indent = " " * INDENT
    text = printable(" ".join(text.split()))
    return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent).lstrip()


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def short(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
