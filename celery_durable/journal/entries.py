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
    """Return the parsed JSON of a stored entry or outcome (one this library wrote)."""
    return _scan(text, 0)[0]


# -- Reading what anyone could have written ---------------------------------------------


class Unreadable(ValueError):
    """Raised when stored text is not an entry, completion or outcome as written here;
    the message says what is wrong, and the caller says where it is."""


#: The field of a call's or an awakeable's entry value that holds its secret token: a
#: completion from outside must bring it (``JournalStore.complete``).
PROOFS = {"call": "token", "awakeable": "id"}

#: The value each kind of entry holds, beside ``run`` and ``patch`` (any JSON): its
#: fields and their types. Replay reads these fields, so they are checked first.
_VALUES: dict[str, dict[str, tuple[type, ...]]] = {
    "sleep": {"until": (int, float)},
    "call": {"id": (str,), "task": (str,)},
    "awakeable": {"id": (str,)},
    "all": {"c": (int,), "f": (int, type(None))},
    "any": {"c": (int,), "w": (int,)},
}
_NUMBER: tuple[type, ...] = (int, float)
_ENTRY_FIELDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("k", (str,)), ("n", (str,)), ("t", _NUMBER), ("d", _NUMBER),
)  # fmt: skip


def read_entry(text: str) -> dict[str, Any]:
    """Return a stored journal entry, parsed, once it has the shape ``encode_entry`` gives.

    Raises:
        Unreadable: it is not JSON, not an object, or lacks a field replay reads.
    """
    entry = _object(text)
    for key, types in _ENTRY_FIELDS:
        _field(entry, key, types)
    _outcome_fields(entry)
    if "a" in entry and (_field(entry, "a", (int,)) < 1):
        raise Unreadable(f"its attempts ('a') are {entry['a']!r}, not a count")
    value = entry.get("v")
    for key, types in _VALUES.get(entry["k"], {}).items():
        if not isinstance(value, dict):
            raise Unreadable(f"a {entry['k']} entry holds {_shown(value)}, not an object")
        _field(value, key, types, f"its value's {key!r}")
    return entry


def read_outcome(text: str) -> dict[str, Any]:
    """Return an invocation's stored final outcome, parsed, once it has the shape
    ``encode_outcome`` gives.

    Raises:
        Unreadable: it is not JSON, not an object, or lacks a field.
    """
    outcome = _object(text)
    _outcome_fields(outcome)
    return outcome


def read_completion(text: str) -> dict[str, Any]:
    """Return an outcome that came from outside, parsed, once it has the shape
    ``encode_completion`` gives.

    Raises:
        Unreadable: it is not JSON, not an object, or lacks a field.
    """
    completion = _object(text)
    _outcome_fields(completion)
    if "t" in completion:
        _field(completion, "t", _NUMBER)
    return completion


def _object(text: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise Unreadable(f"it is {type(text).__name__}, not text")
    try:
        found, end = _scan(text, 0)
    except (StopIteration, ValueError, RecursionError) as exc:
        at = exc.value if isinstance(exc, StopIteration) else getattr(exc, "pos", 0)
        raise Unreadable(f"it is not JSON (at character {at}): {_shown(text)}") from None
    if end != len(text):
        raise Unreadable(f"it has text after its JSON (at character {end}): {_shown(text)}")
    if not isinstance(found, dict):
        raise Unreadable(f"it is {_shown(found)}, not a JSON object")
    return found


def _outcome_fields(found: dict[str, Any]) -> None:
    status = _field(found, "s", (str,))
    if status == "ok":
        if "v" not in found:
            raise Unreadable("it says 'ok' but holds no value ('v')")
    elif status == "error":
        _field(found, "e", (dict,))
    else:
        raise Unreadable(f"its status ('s') is {_shown(status)}, neither 'ok' nor 'error'")
    if "c" in found:
        _field(found, "c", (str,))


def _field(found: dict[str, Any], key: str, types: tuple[type, ...], what: str = "") -> Any:
    what = what or f"its {key!r}"
    if key not in found:
        raise Unreadable(f"it has no {key!r} field")
    value = found[key]
    if type(value) is bool or not isinstance(value, types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise Unreadable(f"{what} is {_shown(value)}, not {names}")
    return value


def _shown(value: Any) -> str:
    """A short, printable view of what was found (it may be long, or hostile)."""
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
