"""Codecs turn a step's value into the JSON text stored in its journal entry, and back.

Every codec writes JSON so that a journal stays readable with ``redis-cli``:

- ``JsonCodec()`` (the default) stores JSON types as they are. A tuple comes back as
  a list, on the first run as on every replay.
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

from celery_durable.errors import CodecError, ConfigurationError

T = TypeVar("T")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
    """Stores JSON types as JSON; with a type, also pydantic models and dataclasses."""

    name = "json"

    def __init__(self, type_: type[T] | None = None) -> None:
        self.type_ = type_

    def encode(self, value: T) -> str:
        plain: Any = value
        if self.type_ is None:
            scalar = _SCALAR_ENCODERS.get(type(value))
            if scalar is not None:
                return _storable(scalar(value))
        else:
            plain = _to_plain(value)
        try:
            return _storable(_dumps(plain))
        except (TypeError, ValueError) as exc:
            hint = (
                f"name its type with codec=JsonCodec({type(value).__name__})"
                if _is_structured(type(value))
                else "return JSON types (dict, list, str, int, float, bool, None)"
            )
            raise CodecError(
                f"the json codec cannot encode a value of type {type(value).__name__}: "
                f"{exc}. Either {hint}, or ask for codec='pickle'."
            ) from exc

    def decode(self, data: Any) -> T:
        if self.type_ is None:
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


#: The default codec: JSON types, no declared type.
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
    return data
