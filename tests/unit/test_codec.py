"""Codecs: what round-trips, and what is refused with a clear error."""

from __future__ import annotations

import dataclasses
import json

import pydantic
import pytest

from celery_durable.codec import JsonCodec, PickleCodec, resolve_codec
from celery_durable.errors import CodecError, ConfigurationError


@dataclasses.dataclass
class Address:
    city: str


@dataclasses.dataclass
class Parcel:
    weight: float
    to: Address
    tags: list[str]


class Charge(pydantic.BaseModel):
    id: str
    amount_cents: int


def roundtrip(codec: JsonCodec[object] | PickleCodec, value: object) -> object:
    return codec.decode(json.loads(codec.encode(value)))


def test_json_stores_json_types_readably() -> None:
    assert JsonCodec().encode({"a": [1, "é", None]}) == '{"a":[1,"é",null]}'


def test_json_turns_a_tuple_into_a_list() -> None:
    assert roundtrip(JsonCodec(), (1, 2)) == [1, 2]


def test_json_with_a_dataclass_type_rebuilds_nested_dataclasses() -> None:
    parcel = Parcel(1.5, Address("Oslo"), ["fragile"])
    assert roundtrip(JsonCodec(Parcel), parcel) == parcel


def test_json_with_a_pydantic_type_rebuilds_the_model() -> None:
    charge = Charge(id="ch_1", amount_cents=999)
    assert roundtrip(JsonCodec(Charge), charge) == charge


def test_json_with_a_list_type_rebuilds_each_item() -> None:
    charges = [Charge(id="a", amount_cents=1), Charge(id="b", amount_cents=2)]
    assert roundtrip(JsonCodec(list[Charge]), charges) == charges


def test_json_refuses_an_object_and_names_its_type_and_the_way_out() -> None:
    with pytest.raises(CodecError, match=r"type Parcel.*codec=JsonCodec\(Parcel\)"):
        JsonCodec().encode(Parcel(1.0, Address("x"), []))
    with pytest.raises(CodecError, match=r"type set.*codec='pickle'"):
        JsonCodec().encode({1, 2})


def test_pickle_round_trips_any_picklable_value_as_json_text() -> None:
    value = {1, 2, frozenset({3})}
    text = PickleCodec().encode(value)
    assert isinstance(json.loads(text), str)
    assert roundtrip(PickleCodec(), value) == value


def test_pickle_refuses_what_cannot_be_pickled() -> None:
    with pytest.raises(CodecError, match="type function"):
        PickleCodec().encode(lambda: 1)


def test_resolve_codec_by_name_and_refuses_unknown_names() -> None:
    assert resolve_codec("pickle").name == "pickle"
    with pytest.raises(ConfigurationError, match=r"durable_codec='yaml' is not a codec"):
        resolve_codec("yaml", "durable_codec")
    with pytest.raises(ConfigurationError, match="needs name, encode"):
        resolve_codec(object())  # type: ignore[arg-type]


def test_text_that_is_not_valid_unicode_is_refused_before_it_reaches_redis() -> None:
    with pytest.raises(CodecError, match="not valid Unicode"):
        JsonCodec().encode("caf\udce9")  # what os.fsdecode makes of a latin-1 file name
    with pytest.raises(CodecError, match="not valid Unicode"):
        JsonCodec().encode({"name": "caf\udce9"})
