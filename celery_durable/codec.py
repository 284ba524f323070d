"""Codecs turn a step's value into the JSON text stored in its journal entry, and back.

Every codec writes JSON so that a journal stays readable with ``redis-cli``:

- ``JsonCodec()`` (the default) writes what Celery's ``json`` serializer writes
  (``kombu.utils.json``), so a value comes back as a plain Celery task's result would.
  JSON types are stored as they are; ``datetime``, ``date``, ``time``, ``Decimal``,
  ``UUID`` and ``bytes`` (and types registered with ``kombu.utils.json.register_type``)
  are stored as kombu's ``{"__type__": ..., "__value__": ...}`` objects and come back
  as those types, nested in lists and dicts too. A tuple comes back as a list, on the
  first run as on every replay.
- ``JsonCodec(SomeType)`` stores a pydantic model or a dataclass as a JSON object
  and rebuilds that type when the value is read.
- ``PickleCodec()`` stores any picklable value as base64 text. It is never chosen
  for you: ask for it with ``codec="pickle"`` or ``durable_codec = "pickle"``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import typing
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from kombu.utils import json as kombu_json

from celery_durable.errors import CodecError, ConfigurationError

T = TypeVar("T")

# kombu's encoder, as Celery's json serializer uses it, but compact and with non-ASCII
# text left as it is: entries stay short and readable in redis-cli, and
# kombu.utils.json.loads reads them all the same.
_dumps = kombu_json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: json.loads without its per-call checks, for reading back what ``_dumps`` wrote.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

#: The containers that can hold one of kombu's envelopes (which are dicts).
_CONTAINERS = frozenset({dict, list})

#: Only text holding this token can hold an envelope: inside a JSON string a quote
#: is always escaped, so the bare token is a key (or a string item) of the value.
_ENVELOPE_TOKEN = '"__type__"'

#: What kombu.utils.json rebuilds out of the box, for error messages.
_KNOWN_TYPES = "datetime, date, time, Decimal, UUID, bytes"


class Codec(Protocol[T]):
    """Encodes values of type ``T`` to JSON text and decodes them from parsed JSON."""

    name: str

    def encode(self, value: T) -> str:
        """Return the JSON text that represents ``value``.

        Raises:
            CodecError: ``value`` cannot be represented by this codec.
        """
        ...

    def decode(self, data: Any) -> T:
        """Rebuild a value from the parsed JSON that ``encode`` produced."""
        ...


class JsonCodec(Generic[T]):
    """Stores what Celery's json serializer stores; with a type, also models and dataclasses.

    Args:
        type_: A pydantic model, a dataclass, or ``list[T]``/``dict[str, T]`` of them,
            rebuilt when the value is read. None stores values as Celery's ``json``
            serializer does and reads them back as it does.
    """

    name = "json"

    # Without a type the codec takes any value: JsonCodec() is a JsonCodec[Any], not a
    # JsonCodec[Never] that a type checker would let nothing be encoded with.
    @typing.overload
    def __init__(self: JsonCodec[Any], type_: None = None) -> None: ...

    @typing.overload
    def __init__(self, type_: type[T]) -> None: ...

    def __init__(self, type_: type[T] | None = None) -> None:
        self.type_ = type_

    def encode(self, value: T) -> str:
        """Return the JSON text of ``value``: kombu's, compact and with non-ASCII unescaped.

        Raises:
            CodecError: ``value`` holds something kombu's JSON cannot write, text that
                is not valid Unicode, or a dict that would not read back (one whose
                only keys are ``__type__`` and ``__value__`` but that is no value
                kombu knows).
        """
        plain: Any = value
        if self.type_ is None:
            scalar = _SCALAR_ENCODERS.get(type(value))
            if scalar is not None:
                return _storable(scalar(value))
        else:
            plain = _to_plain(value)
        try:
            text = _dumps(plain)
        except (TypeError, ValueError) as exc:
            hint = (
                f"name its type with codec=JsonCodec({type(value).__name__})"
                if self.type_ is None and _is_structured(type(value))
                else "return JSON types (dict, list, str, int, float, bool, None) or "
                f"the types Celery's json serializer knows ({_KNOWN_TYPES})"
            )
            raise CodecError(
                f"the json codec cannot encode a value of type {type(value).__name__}: "
                f"{exc}. Either {hint}, or ask for codec='pickle'."
            ) from exc
        if _ENVELOPE_TOKEN in text:
            # A user's dict can look like an envelope; one that does not decode would
            # make every replay fail, so it is refused now, before it is journaled.
            try:
                self.decode(_scan(text, 0)[0])
            except _BadEnvelope as exc:
                raise CodecError(
                    f"the json codec cannot store a value of type {type(value).__name__}: "
                    f"it holds {exc.shown}, which Celery's json serializer reads as one of "
                    f"kombu's typed values, and {exc.why}. Rename the keys of that dict, "
                    "or ask for codec='pickle'."
                ) from exc.__cause__
            except Exception as exc:  # JsonCodec(T): T does not rebuild from its JSON
                raise CodecError(
                    f"the json codec cannot store a value of type {type(value).__name__}: "
                    f"it does not read back ({type(exc).__name__}: {exc}). "
                    "Ask for codec='pickle'."
                ) from exc
        return _storable(text)

    def decode(self, data: Any) -> T:
        """Rebuild a value from the parsed JSON of ``encode``: kombu's envelopes become types.

        Raises:
            CodecError: ``data`` holds an envelope that kombu's JSON cannot decode here.
        """
        if self.type_ is None:
            if type(data) in _CONTAINERS:
                return typing.cast(T, _revive(data))
            return typing.cast(T, data)
        return typing.cast(T, _from_plain(self.type_, data))

    def __repr__(self) -> str:
        return f"JsonCodec({getattr(self.type_, '__name__', '')})"


class PickleCodec:
    """Stores any picklable value as base64 text. Only for trusted journals."""

    name = "pickle"

    def encode(self, value: Any) -> str:
        try:
            raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CodecError(
                f"the pickle codec cannot encode a value of type {type(value).__name__}: {exc}"
            ) from exc
        return '"' + base64.b64encode(raw).decode("ascii") + '"'

    def decode(self, data: Any) -> Any:
        return pickle.loads(base64.b64decode(data))

    def __repr__(self) -> str:
        return "PickleCodec()"


#: The default codec: what Celery's json serializer stores, no declared type.
PLAIN_JSON: JsonCodec[Any] = JsonCodec()

#: Types whose JSON decodes back to an equal value of the same type.
JSON_SCALARS = frozenset({type(None), bool, int, str})

# Most step values are small scalars; JSONEncoder builds a new C encoder per call.
_SCALAR_ENCODERS: dict[type[Any], Callable[[Any], str]] = {
    type(None): lambda _: "null",
    bool: lambda v: "true" if v else "false",
    int: int.__repr__,
    str: json.encoder.encode_basestring,
}

CODECS: dict[str, Codec[Any]] = {"json": PLAIN_JSON, "pickle": PickleCodec()}


def resolve_codec(codec: str | Codec[Any], setting: str = "codec") -> Codec[Any]:
    """Return the codec an argument or setting names.

    Raises:
        ConfigurationError: ``codec`` is neither a codec nor a known codec name.
    """
    if isinstance(codec, str):
        try:
            return CODECS[codec]
        except KeyError:
            raise ConfigurationError(
                f"{setting}={codec!r} is not a codec; use one of {sorted(CODECS)} "
                "or a codec object such as JsonCodec(MyModel)."
            ) from None
    if not (hasattr(codec, "encode") and hasattr(codec, "decode") and hasattr(codec, "name")):
        raise ConfigurationError(
            f"{setting}={codec!r} is not a codec: it needs name, encode() and decode()."
        )
    return codec


def _storable(text: str) -> str:
    """Return ``text`` if it is valid UTF-8 once encoded, as Redis will need it."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from os.fsdecode
            raise CodecError(f"the value holds text that is not valid Unicode: {exc}") from exc
    return text


def _revive(data: Any) -> Any:
    """Return ``data`` with kombu's envelopes turned back into the values they stand for.

    Works bottom-up, as ``kombu.utils.json.loads`` calls its object hook, and copies
    only the containers on the way to an envelope: ``data`` is left as it is, and a
    value without envelopes is returned itself.

    Raises:
        CodecError: an envelope names a type kombu does not know, or a malformed value.
    """
    if type(data) is list:
        # One pass in C over the item types: lists of scalars are the common case.
        if _CONTAINERS.isdisjoint(map(type, data)):
            return data
        items: list[Any] = data
        for i, item in enumerate(data):
            if type(item) in _CONTAINERS:
                new = _revive(item)
                if new is not item:
                    if items is data:
                        items = data.copy()
                    items[i] = new
        return items
    if type(data) is dict:
        fields: dict[str, Any] = data
        for key, item in data.items():
            if type(item) in _CONTAINERS:
                new = _revive(item)
                if new is not item:
                    if fields is data:
                        fields = data.copy()
                    fields[key] = new
        if "__type__" in fields and len(fields) == 2:
            return _unwrap(fields)
        return fields
    return data


class _BadEnvelope(CodecError):
    """A dict in kombu's envelope form that kombu's JSON cannot turn into a value."""

    def __init__(self, shown: str, why: str) -> None:
        super().__init__(f"the json codec cannot decode the stored {shown}: {why}")
        self.shown = shown
        self.why = why


def _unwrap(fields: dict[str, Any]) -> Any:
    """Return what kombu's object hook makes of a dict that may be one of its envelopes."""
    try:
        return kombu_json.object_hook(fields)
    except Exception as exc:
        unknown = isinstance(exc, ValueError) and exc.args[:1] == ("Unsupported type",)
        why = (
            "kombu.utils.json knows no such type in this process (a type added with "
            "kombu.utils.json.register_type must be added in every process that reads "
            "the journal)"
            if unknown
            else f"kombu.utils.json cannot decode its value ({type(exc).__name__}: {exc})"
        )
        shown = f"{{'__type__': {fields['__type__']!r}, '__value__': ...}}"
        raise _BadEnvelope(shown, why) from exc


def _is_structured(cls: type[Any]) -> bool:
    return dataclasses.is_dataclass(cls) or hasattr(cls, "model_validate")


def _to_plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(cls: Any, data: Any) -> Any:
    """Rebuild ``cls`` from ``data``; below the declared types, envelopes become types."""
    if data is None:
        return None
    if hasattr(cls, "model_validate"):
        return cls.model_validate(data)
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        hints = typing.get_type_hints(cls)
        return cls(**{name: _from_plain(hints.get(name), v) for name, v in data.items()})
    origin = typing.get_origin(cls)
    if origin in (list, tuple) and isinstance(data, list):
        item = (typing.get_args(cls) or (None,))[0]
        return origin(_from_plain(item, v) for v in data)
    if origin is dict and isinstance(data, dict):
        value_type = (typing.get_args(cls) or (None, None))[1]
        return {k: _from_plain(value_type, v) for k, v in data.items()}
    # A field of type datetime, Decimal, Any...: what JsonCodec() would make of it. Not
    # inside pydantic models, whose JSON mode writes no envelopes of its own.
    return _revive(data)
