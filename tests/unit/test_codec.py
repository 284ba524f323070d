"""Codecs: what round-trips, and what is refused with a clear error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from kombu import serialization
from kombu.exceptions import DecodeError
from kombu.utils import json as kombu_json

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


@dataclasses.dataclass
class Invoice:
    issued: dt.datetime
    due: dt.date
    cutoff: dt.time
    total: Decimal
    id: uuid.UUID
    pdf: bytes
    reminders: list[dt.date]
    lines: dict[str, Decimal]
    extra: Any


class Charge(pydantic.BaseModel):
    id: str
    amount_cents: int


def roundtrip(codec: JsonCodec[Any] | PickleCodec, value: object) -> object:
    # json.loads parses as the journal does: the whole entry at once, no object hook.
    return codec.decode(json.loads(codec.encode(value)))


def through_celery(value: object) -> object:
    """What a plain Celery task returning ``value`` gives back with the json serializer."""
    content_type, encoding, data = serialization.dumps(value, serializer="json")
    return serialization.loads(data, content_type, encoding)


#: One value of every type Celery's json serializer (kombu.utils.json) rebuilds.
KOMBU_VALUES = {
    "datetime": dt.datetime(2025, 3, 1, 12, 30, 5, 123456),
    "aware datetime": dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "date": dt.date(2025, 3, 1),
    "time": dt.time(23, 59, 58, 999),
    "aware time": dt.time(8, 0, tzinfo=dt.UTC),
    "Decimal": Decimal("19.90"),
    "UUID": uuid.UUID("8c5b7a0e-6f39-4c1e-9a1f-0d6a6f3b2c11"),
    "utf-8 bytes": "café".encode(),
    "other bytes": b"\xff\x00\xfe",
    "empty bytes": b"",
}
KOMBU_CASES = pytest.mark.parametrize("value", KOMBU_VALUES.values(), ids=KOMBU_VALUES.keys())


def assert_same(got: object, want: object) -> None:
    """Equal, and of the same type all the way down (a date is not a datetime)."""
    assert type(got) is type(want)
    assert got == want
    if isinstance(want, list):
        assert isinstance(got, list)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert isinstance(got, dict)
        for key in want:
            assert_same(got[key], want[key])


def test_json_stores_json_types_readably() -> None:
    assert JsonCodec().encode({"a": [1, "é", None]}) == '{"a":[1,"é",null]}'


def test_json_turns_a_tuple_into_a_list() -> None:
    assert roundtrip(JsonCodec(), (1, 2)) == [1, 2]


@KOMBU_CASES
def test_json_round_trips_each_kombu_type_alone_as_that_type(value: object) -> None:
    assert_same(roundtrip(JsonCodec(), value), value)
    assert_same(roundtrip(JsonCodec(), value), through_celery(value))


@KOMBU_CASES
def test_json_round_trips_each_kombu_type_in_a_list(value: object) -> None:
    stored = [value, 1, [value], "x"]
    assert_same(roundtrip(JsonCodec(), stored), stored)
    assert_same(roundtrip(JsonCodec(), stored), through_celery(stored))


@KOMBU_CASES
def test_json_round_trips_each_kombu_type_in_a_dict(value: object) -> None:
    stored = {"value": value, "n": 1, "deeper": {"items": [value, {"value": value}]}}
    assert_same(roundtrip(JsonCodec(), stored), stored)
    assert_same(roundtrip(JsonCodec(), stored), through_celery(stored))


def test_json_turns_a_tuple_of_kombu_types_into_a_list_of_them() -> None:
    value = (Decimal("1.5"), dt.date(2025, 1, 1))
    assert_same(roundtrip(JsonCodec(), value), list(value))
    assert_same(roundtrip(JsonCodec(), value), through_celery(value))


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.1"),
        {"at": dt.datetime(2025, 3, 1, 12, 0), "ids": [uuid.UUID(int=7)], "raw": b"\x80"},
        ["é", b"caf\xc3\xa9", (dt.time(1, 2), None, 1.5)],
    ],
    ids=["decimal", "dict", "list"],
)
def test_json_stores_the_text_kombu_writes(value: object) -> None:
    text = JsonCodec().encode(value)
    # Celery's serializer writes the same JSON, only with spaces and \u escapes.
    assert text == kombu_json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(text) == json.loads(kombu_json.dumps(value))
    assert_same(kombu_json.loads(text), roundtrip(JsonCodec(), value))


@pytest.mark.parametrize(
    "value",
    [
        {"__type__": "order", "id": 7},
        {"__type__": "decimal"},
        {"__value__": "1.5"},
        {"__type__": "decimal", "__value__": "1.5", "currency": "EUR"},
        {"kind": {"__type__": "date", "note": [{"__value__": 1}]}},
    ],
)
def test_json_keeps_a_dict_that_is_not_an_envelope_a_dict(value: dict[str, Any]) -> None:
    assert_same(roundtrip(JsonCodec(), value), value)
    assert_same(roundtrip(JsonCodec(), [value]), [value])
    assert_same(roundtrip(JsonCodec(), value), through_celery(value))


def test_json_reads_a_dict_in_envelope_form_as_celery_does() -> None:
    value = {"__type__": "decimal", "__value__": "1.5"}
    assert_same(roundtrip(JsonCodec(), value), Decimal("1.5"))
    assert_same(roundtrip(JsonCodec(), value), through_celery(value))


def test_json_decode_leaves_the_parsed_data_as_it_is() -> None:
    plain = [1, "a", [2.5, None], {"k": [True]}]
    assert JsonCodec().decode(plain) is plain
    parsed = json.loads(JsonCodec().encode({"at": [dt.date(2025, 1, 1)], "n": [1]}))
    snapshot = json.loads(json.dumps(parsed))
    decoded = JsonCodec().decode(parsed)
    assert decoded == {"at": [dt.date(2025, 1, 1)], "n": [1]}
    assert parsed == snapshot
    assert decoded["n"] is parsed["n"]  # what holds no envelope is not copied


def test_json_follows_types_registered_with_kombu(monkeypatch: pytest.MonkeyPatch) -> None:
    # register_type writes to these module-level tables; setitem undoes it afterwards.
    monkeypatch.setitem(kombu_json._encoders, complex, ("complex", lambda c: [c.real, c.imag]))
    monkeypatch.setitem(kombu_json._decoders, "complex", lambda v: complex(*v))
    assert roundtrip(JsonCodec(), {"z": [1 + 2j]}) == {"z": [1 + 2j]}


def test_json_with_a_dataclass_type_rebuilds_nested_dataclasses() -> None:
    parcel = Parcel(1.5, Address("Oslo"), ["fragile"])
    assert roundtrip(JsonCodec(Parcel), parcel) == parcel


def test_json_with_a_dataclass_type_rebuilds_kombu_typed_fields() -> None:
    invoice = Invoice(
        issued=dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC),
        due=dt.date(2025, 3, 31),
        cutoff=dt.time(17, 0),
        total=Decimal("120.50"),
        id=uuid.UUID(int=42),
        pdf=b"%PDF-\xe2\xe3",
        reminders=[dt.date(2025, 3, 20), dt.date(2025, 3, 27)],
        lines={"a": Decimal("100.50"), "b": Decimal("20")},
        extra={"paid_at": dt.datetime(2025, 3, 2), "refs": (uuid.UUID(int=1),)},
    )
    back = roundtrip(JsonCodec(Invoice), invoice)
    assert isinstance(back, Invoice)
    for field in dataclasses.fields(Invoice):
        want = getattr(invoice, field.name)
        if field.name == "extra":
            want = {**want, "refs": list(want["refs"])}
        assert_same(getattr(back, field.name), want)


def test_json_with_a_pydantic_type_rebuilds_the_model() -> None:
    charge = Charge(id="ch_1", amount_cents=999)
    assert roundtrip(JsonCodec(Charge), charge) == charge


def test_json_with_a_list_type_rebuilds_each_item() -> None:
    charges = [Charge(id="a", amount_cents=1), Charge(id="b", amount_cents=2)]
    assert roundtrip(JsonCodec(list[Charge]), charges) == charges


def test_json_with_a_container_type_of_kombu_types() -> None:
    days = [dt.date(2025, 1, 1), dt.date(2025, 1, 2)]
    assert_same(roundtrip(JsonCodec(list[dt.date]), days), days)
    totals = {"eur": Decimal("1.10")}
    assert_same(roundtrip(JsonCodec(dict[str, Decimal]), totals), totals)


def test_json_refuses_an_object_and_names_its_type_and_the_way_out() -> None:
    with pytest.raises(CodecError, match=r"type Parcel.*codec=JsonCodec\(Parcel\)"):
        JsonCodec().encode(Parcel(1.0, Address("x"), []))
    with pytest.raises(CodecError, match=r"type set.*datetime, date, time.*codec='pickle'"):
        JsonCodec().encode({1, 2})
    with pytest.raises(CodecError, match=r"type dict: .*bytearray.*codec='pickle'"):
        JsonCodec().encode({"raw": bytearray(b"x")})


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"__type__": "order", "__value__": 7}, r"'order'.*knows no such type"),
        ([{"__type__": "date", "__value__": "soon"}], r"'date'.*cannot decode its value"),
        ({"a": {"__type__": "uuid", "__value__": "x"}}, r"'uuid'.*cannot decode its value"),
    ],
)
def test_json_refuses_a_dict_in_envelope_form_that_would_not_read_back(
    value: object, why: str
) -> None:
    with pytest.raises(CodecError, match=why) as caught:
        JsonCodec().encode(value)
    assert "Rename the keys of that dict, or ask for codec='pickle'" in str(caught.value)
    with pytest.raises(DecodeError):
        through_celery(value)  # a plain Celery task's result would not read back either


def test_json_decode_names_an_envelope_it_cannot_read() -> None:
    with pytest.raises(CodecError, match=r"decode the stored \{'__type__': 'order'.*register_type"):
        JsonCodec().decode([{"__type__": "order", "__value__": 7}])


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
    with pytest.raises(CodecError, match="not valid Unicode"):
        JsonCodec().encode([dt.date(2025, 1, 1), "caf\udce9"])
