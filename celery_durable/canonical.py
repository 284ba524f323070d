"""The canonical form of a task argument: plain JSON, equal for equal arguments anywhere.

Fingerprints (``celery_durable.fingerprint``) digest this form, so it must be the same
for every delivery of the same message, in any worker process and under any
``PYTHONHASHSEED``. A str is its JSON string (``"order-1"``), a small int its digits,
and anything else a JSON array led by a tag, such as ``["l",1,"a"]`` for a sequence,
``["m","a",1,"b",2]`` for a mapping with str keys (sorted by key) and ``["s",...]``
for a set (items sorted by their own text). Changing any of this changes the
fingerprint of every invocation in flight: change ``fingerprint.VERSION`` with it.

What counts as the same argument (the fingerprint is of the arguments as delivered,
after the serializer: under JSON an ``int`` dict key arrives as a ``str``, and is
fingerprinted as one):

- ``None``, ``bool``, ``int``, ``float`` and ``str`` are themselves (so ``1``,
  ``1.0``, ``True`` and ``"1"`` all differ). Subclasses count as their base type,
  as they do after a trip through Celery's JSON serializer.
- A ``list`` and a ``tuple`` with equal items are the same sequence: Celery's JSON
  serializer turns one into the other, and a re-published message must not look
  like another invocation. A ``set`` and a ``frozenset`` are the same set; their
  items are sorted by canonical form, never by hash order.
- A mapping is unordered: ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` are the same
  argument. Keys of any mix of types are allowed (``{1: "x", "1": "y"}``); ``1`` and
  ``"1"`` stay different keys.
- ``bytes``, ``bytearray`` and ``memoryview`` are their bytes. ``datetime``, ``date``
  and ``time`` are their ISO form (an aware value keeps its UTC offset);
  ``timedelta``, ``Decimal`` (``1.0`` and ``1.00`` differ) and ``UUID`` are exact.
- An enum member is its type and its value.
- An object with kombu's ``__json__`` hook, or of a type registered with
  ``kombu.utils.json.register_type``, is what kombu would send for it.
- A dataclass is its type and its fields that take part in ``==``
  (``field(compare=False)`` is left out). An object whose type has ``model_dump``
  (a pydantic model) is its type and ``model_dump()``.
- Any other object whose type defines ``__repr__`` is its type and its repr, unless
  the repr holds the object's memory address (``<Foo object at 0x7f..>``, or its
  ``id()``), which changes on every delivery. Such a repr must also not depend on
  hash order (printing a set of strings in iteration order): that cannot be
  detected here and would make every redelivery look like a conflict.
- An object that keeps ``object.__repr__`` is its type and its pickled state
  (``__getstate__()``: its ``__dict__`` and ``__slots__`` unless the class says
  otherwise), each value reduced by the same rules.

What cannot be reduced (a function, a lock, a socket, an object holding one, a
value that contains itself) is refused with :class:`UnstableArgumentsError`, which
names the argument, the place inside it and the type, never the value.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import json
import re
import types
import uuid
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from kombu.utils import json as kombu_json

BIG = 1 << 63  # beyond this an int is written in hex: decimal str() is capped at 4300 digits
_PLAIN = frozenset({str, float, bool, type(None)})

# ensure_ascii: the text is the same whatever Unicode version Python's tables follow;
# check_circular is off because canonical forms are built fresh and hold no cycles.
_text = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode
_DEFAULT_REPR: Any = object.__repr__  # Any: mypy sees the bound and unbound forms as unrelated
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z").match


_CALLABLES = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinMethodType,
    functools.partial,
)


class Refusal(Exception):
    """A value that cannot be canonicalised; the path grows as it unwinds."""

    def __init__(self, type_: type, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.type_name = _type_name(type_)
        self.reason = reason
        self.hint = hint
        self.path: list[str] = []  # innermost segment first


def canonical_text(value: Any) -> str:
    """Return the canonical form of ``value`` as compact ASCII JSON text.

    Raises:
        Refusal: ``value`` has no canonical form; its ``path`` says where inside it.
    """
    return _text(canon(value))


def canon(value: Any) -> Any:
    """Return the canonical JSON form of ``value``: plain JSON, or a list led by a tag."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return value if -BIG < value < BIG else ["i", hex(value)]
    if kind is list or kind is tuple:
        return _canon_sequence(value)
    if kind is dict:
        return _canon_mapping(value)
    return _canon_other(value, kind)


def _canon_sequence(value: Iterable[Any]) -> list[Any]:
    out: list[Any] = ["l"]
    append = out.append
    for index, item in enumerate(value):
        if type(item) in _PLAIN:
            append(item)
            continue
        try:
            append(canon(item))
        except Refusal as refusal:
            refusal.path.append(f"[{index}]")
            raise
    return out


def _canon_mapping(value: Mapping[Any, Any]) -> list[Any]:
    if all(isinstance(key, str) for key in value):
        # The usual case needs no encoding to sort: str order is the same everywhere.
        return _canon_attributes(value, attribute=False)
    items: list[tuple[str, str, Any, Any]] = []
    for key, item in value.items():
        try:
            canon_key = canon(key)
        except Refusal as refusal:
            refusal.path.append(f"[<a {type(key).__name__} key>]")
            raise
        try:
            canon_item = canon(item)
        except Refusal as refusal:
            refusal.path.append(f"[{key_label(key)}]")
            raise
        items.append((_text(canon_key), _text(canon_item), canon_key, canon_item))
    # Sorted by the canonical text of the key, then of the value: two distinct keys
    # may share a canonical form (objects with equal reprs), and order must not tell.
    items.sort(key=lambda entry: (entry[0], entry[1]))
    out: list[Any] = ["d"]
    for _, _, canon_key, canon_item in items:
        out.append(canon_key)
        out.append(canon_item)
    return out


def _canon_attributes(value: Mapping[str, Any], attribute: bool = True) -> list[Any]:
    """Return the form of a str-keyed mapping, sorted by key; refusals name the key."""
    out: list[Any] = ["m"]
    append = out.append
    for key in sorted(value):  # keys are distinct str, so this order is total and fixed
        item = value[key]
        append(key if type(key) is str else str.__str__(key))
        if type(item) in _PLAIN:
            append(item)
            continue
        try:
            append(canon(item))
        except Refusal as refusal:
            refusal.path.append(f".{key}" if attribute else f"[{key_label(key)}]")
            raise
    return out


def _canon_set(value: AbstractSet[Any]) -> list[Any]:
    items = []
    for item in value:
        try:
            items.append(canon(item))
        except Refusal as refusal:
            refusal.path.append("{<an item>}")
            raise
    items.sort(key=_text)  # hash order differs between processes; canonical text does not
    return ["s", *items]


def _canon_other(value: Any, kind: type) -> Any:
    """Return the canonical form of anything but the exact built-in types."""
    if isinstance(value, enum.Enum):
        return ["e", _type_name(kind), _nested(value._value_, ".value")]
    # Subclasses of the JSON types count as their base, as after Celery's JSON serializer.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return canon(int.__int__(value))
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, bytes | bytearray):
        return ["b", value.hex()]
    if isinstance(value, memoryview):
        return ["b", value.tobytes().hex()]
    if isinstance(value, list | tuple):
        return _canon_sequence(value)
    if isinstance(value, Mapping):
        return _canon_mapping(value)
    if isinstance(value, AbstractSet):
        return _canon_set(value)
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date
        return ["dt", datetime.datetime.isoformat(value)]
    if isinstance(value, datetime.date):
        return ["date", datetime.date.isoformat(value)]
    if isinstance(value, datetime.time):
        return ["time", datetime.time.isoformat(value)]
    if isinstance(value, datetime.timedelta):
        return ["td", value.days, value.seconds, value.microseconds]
    if isinstance(value, decimal.Decimal):
        # as_tuple, not str(): str() follows the thread's context (capitals).
        sign, digits, exponent = value.as_tuple()
        return ["dec", sign, "".join(map(str, digits)), exponent]
    if isinstance(value, uuid.UUID):
        return ["uuid", value.hex]
    return _canon_object(value, kind)


def _canon_object(value: Any, kind: type) -> Any:
    """Return the canonical form of a user object: the form its sender means by it."""
    name = _type_name(kind)
    if isinstance(value, getattr(kombu_json, "textual_types", ())):
        return str(value)  # Django's lazy strings: kombu sends them as str
    if callable(getattr(kind, "__json__", None)):
        return ["j", name, _nested(_call(value, kind, "__json__"), ".__json__()")]
    registered = _kombu_encoder(value)
    if registered is not None:
        marker, encode = registered
        wire = _call(value, kind, "kombu encoder", encode)
        return ["k", marker or name, _nested(wire, "")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            field.name: getattr(value, field.name)
            for field in dataclasses.fields(value)
            if field.compare and hasattr(value, field.name)
        }
        return ["dc", name, _canon_attributes(fields)]
    if callable(getattr(kind, "model_dump", None)):  # a pydantic model, duck-typed
        dump = _call(value, kind, "model_dump")
        if isinstance(dump, Mapping) and all(isinstance(key, str) for key in dump):
            return ["pd", name, _canon_attributes(dump)]
        return ["pd", name, _nested(dump, ".model_dump()")]
    if kind.__repr__ is not _DEFAULT_REPR:
        return ["r", name, _stable_repr(value, kind)]
    state = _call(value, kind, "__getstate__")
    if isinstance(state, Mapping) and all(isinstance(key, str) for key in state):
        return ["o", name, _canon_attributes(state)]
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], Mapping):
        # object.__getstate__ with __slots__: (the __dict__ or None, the slot values)
        return ["o", name, _canon_attributes({**(state[0] or {}), **state[1]})]
    return ["o", name, _nested(state, ".__getstate__()")]


def _nested(value: Any, segment: str) -> Any:
    try:
        return canon(value)
    except Refusal as refusal:
        refusal.path.append(segment)
        raise


def _call(value: Any, kind: type, what: str, function: Any = None) -> Any:
    """Call one of the object's own hooks; what it raises becomes a refusal."""
    try:
        return function(value) if function is not None else getattr(value, what)()
    except RecursionError:
        raise
    except Exception as exc:
        raise Refusal(
            kind,
            f"that cannot be read (its {what} raised {type(exc).__name__})",
            "Pass plain data (str, int, list, dict) instead; if it is your own class, make "
            "it a dataclass.",
        ) from exc


def _stable_repr(value: Any, kind: type) -> str:
    text: str = _call(value, kind, "__repr__", repr)
    ident = id(value)
    # CPython's default reprs say " at 0x..."; others (Mock's id='...') print id()
    # another way. Small ids (not CPython's) would match ordinary digits by chance.
    if " at 0x" in text or (
        ident >= 1 << 24 and (format(ident, "x") in text.lower() or str(ident) in text)
    ):
        if isinstance(value, _CALLABLES):
            hint = (
                "Pass the function's dotted name as a str instead, and import it inside the task."
            )
        else:
            hint = (
                "Pass plain data (str, int, list, dict) that identifies it instead; if it "
                f"is your own class, give {kind.__qualname__} a __repr__ that does not "
                "depend on object identity, or make it a dataclass."
            )
        raise Refusal(
            kind, "whose repr holds a memory address, which differs on every delivery", hint
        )
    return text


def _kombu_encoder(value: Any) -> tuple[str | None, Any] | None:
    # kombu keeps its registry private; read it defensively and skip it if it moves.
    registry = getattr(kombu_json, "_encoders", None)
    if not isinstance(registry, dict):
        return None
    for registered, entry in registry.items():
        if isinstance(registered, type) and isinstance(value, registered):
            marker, encode = entry
            return marker, encode
    return None


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


# -- Reading fingerprints -----------------------------------------------------------


def key_label(key: Any) -> str:
    """Return a key as an error message may show it: an identifier, else only its type."""
    if isinstance(key, str) and len(key) <= 64 and _IDENTIFIER(key):
        return repr(str.__str__(key))
    return f"<{type(key).__name__} key>"
