"""Journal entries: their JSON form, and the errors they record.

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
from typing import Any

from celery_durable.errors import ValueTooLargeError

#: json.loads without its per-call checks: journal entries are always str.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def parse(text: str) -> Any:
    """Return the parsed JSON of a stored entry or outcome."""
    return _scan(text, 0)[0]


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


def encode_completion(payload: str | None, error: dict[str, Any] | None, at: float) -> str:
    """Return the JSON text of an outcome that came from outside (a child, an awakeable).

    ``payload`` is already-encoded JSON; ``at`` is when it completed, in seconds.
    """
    if error is not None:
        return f'{{"s":"error","e":{_dumps(error)},"t":{at:.6f}}}'
    return f'{{"s":"ok","v":{payload},"t":{at:.6f}}}'


def check_size(payload: str, limit: int, what: str) -> None:
    """Refuse an encoded value larger than ``limit`` bytes, before anything is journaled.

    Raises:
        ValueTooLargeError: it is larger; nothing was written.
    """
    # A str of n characters is n to 4n bytes in UTF-8: count the bytes only near the limit.
    if limit and len(payload) * 4 > limit and len(payload.encode()) > limit:
        raise ValueTooLargeError(
            f"{what} produced a value of {len(payload.encode())} bytes once encoded, more than "
            f"durable_max_value_bytes={limit}; nothing was journaled. Every replay reloads "
            "every journaled value: store large data elsewhere (a file store, a database) "
            "and journal a reference to it, or raise the setting."
        )
