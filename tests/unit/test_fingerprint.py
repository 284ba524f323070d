"""Argument fingerprints: equal in every process, refused when unstable, and readable."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import hashlib
import os
import pickle
import re
import subprocess
import sys
import threading
import uuid
from typing import Any, NamedTuple
from unittest import mock

import pydantic
import pytest
from kombu.utils import json as kombu_json

from celery_durable.errors import ConfigurationError, DurableError
from celery_durable.fingerprint import UnstableArgumentsError, describe_difference, fingerprint

FORMAT = re.compile(r"v1\|a:((?:[0-9a-f]{10})(?:,[0-9a-f]{10})*)?\|k:([^|]*)")


@dataclasses.dataclass
class Parcel:
    weight: float
    tags: set[str]
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass
class Box:
    weight: float
    tags: set[str]


class Charge(pydantic.BaseModel):
    id: str
    amount: decimal.Decimal
    labels: frozenset[str] = frozenset()


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


class Point(NamedTuple):
    x: int
    y: int


class Order:
    """Keeps object.__repr__: fingerprinted by its state."""

    def __init__(self, sku: str, tags: set[str]) -> None:
        self.sku = sku
        self.tags = tags


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: str) -> None:
        self.a = a
        self.b = b


class Money:
    """A value type with a repr that does not depend on identity."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __repr__(self) -> str:
        return f"Money({self.cents})"


class Connection:
    """A handle whose repr says where it lives, as handles often do."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"<Connection to {self.secret} at {hex(id(self))}>"


class Holder:
    """Default repr, so its state is walked, and that state holds a connection."""

    def __init__(self) -> None:
        self.conn = Connection("db-password")


@dataclasses.dataclass
class Job:
    name: str
    conn: Any


class Broken:
    def __repr__(self) -> str:
        raise ValueError("no repr today")


class Label(str):
    pass


class Count(int):
    pass


class Hooked:
    """Sent by kombu's JSON serializer as what ``__json__`` returns."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __json__(self) -> dict[str, str]:
        return {"value": self.value}


def one(value: Any) -> str:
    """Return the fingerprint of a single positional argument."""
    return fingerprint([value], {})


# -- The same arguments give the same fingerprint ---------------------------------

SCRIPT = """
import dataclasses, datetime, decimal, enum, uuid
import pydantic
from celery_durable.fingerprint import fingerprint

class Order:
    def __init__(self, sku, tags):
        self.sku = sku
        self.tags = tags

@dataclasses.dataclass
class Parcel:
    tags: set

class Charge(pydantic.BaseModel):
    labels: set[str]

class Colour(enum.Enum):
    RED = "red"

print(fingerprint(
    (
        {"sku-1", "sku-2", "sku-3", "sku-4"},
        frozenset({frozenset({"a", "b"}), frozenset({"c", "d"})}),
        {1: "int", "1": "str", (2, "x"): {"y", "z"}, None: 0},
        Order("A1", {"red", "green", "blue"}),
        Parcel({"p", "q", "r"}),
        Charge(labels={"l1", "l2", "l3"}),
        Colour.RED,
        b"bytes",
        datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        decimal.Decimal("12.50"),
        uuid.UUID(int=7),
    ),
    {"zeta": {"s", "t", "u"}, "alpha": 1},
))
"""


def in_process(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_fingerprint_is_the_same_in_every_process_and_hash_seed() -> None:
    # Set order follows str hashing, which PYTHONHASHSEED changes; so do object addresses.
    prints = {in_process(seed) for seed in ("1", "2", "3", "4242", "random")}
    assert len(prints) == 1
    assert FORMAT.fullmatch(prints.pop())


def test_the_format_does_not_drift_between_releases() -> None:
    # A changed digest would refuse every in-flight invocation as a conflict after an
    # upgrade: change the encoding only together with VERSION.
    value = fingerprint(
        ["order-1", 3, 2.5, None, True, [1, "a"], {"b": 1, 2: "c"}, {"x", "y"}, b"\x00"],
        {"qty": 3, "at": datetime.date(2024, 1, 31), "id": uuid.UUID(int=1)},
    )
    assert value == GOLDEN


GOLDEN = (
    "v1|a:f85d225ebb,e4ffcdac53,bef23b615b,308d7cbec1,57c6ea54a7,a4f1c7f1b0,"
    "865a51f121,a3332dc574,cfbc7a6ef8|k:at=0d93f394e4,id=af11439705,qty=e4ffcdac53"
)


def test_a_digest_is_blake2b_of_the_canonical_json_text() -> None:
    def digest(text: str) -> str:
        return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()

    assert one("order-1") == "v1|a:" + digest('"order-1"') + "|k:"
    # A mapping with a non-str key: items sorted by the key's canonical text.
    assert one({"b": 1, 2: "c"}) == "v1|a:" + digest('["d","b",1,2,"c"]') + "|k:"


def test_keyword_order_never_matters() -> None:
    assert fingerprint([], {"a": 1, "b": 2, "c": 3}) == fingerprint([], {"c": 3, "a": 1, "b": 2})


def test_a_dict_argument_is_an_unordered_mapping() -> None:
    assert one({"a": 1, "b": {"c": 2, "d": 3}}) == one({"b": {"d": 3, "c": 2}, "a": 1})
    assert one({"a": 1, "b": 2}) != one({"a": 2, "b": 1})


def test_dict_keys_of_mixed_types_are_fingerprinted_not_refused() -> None:
    mixed = {1: "int", "1": "str", None: 0, (1, 2): "tuple", 2.5: "float"}
    reordered = dict(reversed(list(mixed.items())))
    assert one(mixed) == one(reordered)
    assert one({1: "a", "1": "b"}) != one({1: "b", "1": "a"})
    assert one({1: "a"}) != one({"1": "a"})


def test_sets_are_sorted_by_content_and_nest() -> None:
    assert one({"a", "b"}) == one(frozenset({"b", "a"}))
    assert one({"a", "b"}) != one({"a", "c"})
    assert one({"a", "b"}) != one(["a", "b"])
    nested = frozenset({frozenset({1, "x"}), frozenset({(2, 3)})})
    assert one(nested) == one(frozenset({frozenset({(2, 3)}), frozenset({"x", 1})}))


def test_a_tuple_and_a_list_are_the_same_sequence() -> None:
    # Celery's JSON serializer delivers a tuple as a list; a re-published message must
    # not look like another invocation.
    assert one((1, (2, "x"))) == one([1, [2, "x"]])
    assert fingerprint((1, 2), None) == fingerprint([1, 2], {})
    assert one(Point(1, 2)) == one((1, 2))


def test_scalars_keep_their_type() -> None:
    prints = [one(v) for v in (1, 1.0, True, "1", b"1", None, 0, False, "", -0.0, 0.0)]
    assert len(set(prints)) == len(prints)


def test_subclasses_of_str_and_int_count_as_their_base() -> None:
    # These take the general path; plain str and int take the fast one.
    assert one(Label("x")) == one("x")
    assert one(Count(5)) == one(5)
    assert one([Label("x"), Count(5)]) == one(["x", 5])


STABLE_VALUES = [
    pytest.param(10**5000, id="huge int"),
    pytest.param(-(2**63), id="int at the fast path's edge"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param("naïve ☃ \U0001f600", id="non-ascii str"),
    pytest.param("\ud800", id="lone surrogate"),
    pytest.param(b"\x00\xff", id="bytes"),
    pytest.param(bytearray(b"\x00\xff"), id="bytearray"),
    pytest.param((1, ("a", None)), id="tuple"),
    pytest.param({"a", "b", "c"}, id="set"),
    pytest.param(frozenset({frozenset({"a"}), frozenset({"b"})}), id="frozenset of frozensets"),
    pytest.param({1: "a", "1": {"b"}, None: [1.5]}, id="mixed keys"),
    pytest.param(collections.OrderedDict(b=1, a=2), id="OrderedDict"),
    pytest.param(datetime.datetime(2024, 5, 1, 12, 30, 1, 5), id="naive datetime"),
    pytest.param(
        datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        id="aware datetime",
    ),
    pytest.param(datetime.date(2024, 5, 1), id="date"),
    pytest.param(datetime.time(12, 30, 0, 10), id="time"),
    pytest.param(datetime.timedelta(days=1, microseconds=3), id="timedelta"),
    pytest.param(decimal.Decimal("12.50"), id="Decimal"),
    pytest.param(decimal.Decimal("NaN"), id="Decimal NaN"),
    pytest.param(uuid.UUID(int=42), id="UUID"),
    pytest.param(Parcel(1.5, {"fragile", "heavy"}), id="dataclass"),
    pytest.param(
        Charge(id="ch_1", amount=decimal.Decimal("9.99"), labels=frozenset({"a"})), id="pydantic"
    ),
    pytest.param(Colour.RED, id="Enum"),
    pytest.param(Level.LOW, id="IntEnum"),
    pytest.param(Point(1, 2), id="namedtuple"),
    pytest.param(Order("A1", {"x", "y"}), id="object with state"),
    pytest.param(Slotted(1, "b"), id="object with slots"),
    pytest.param(Money(250), id="object with its own repr"),
    pytest.param(object(), id="bare object"),
    pytest.param(len, id="builtin function"),
    pytest.param(Parcel, id="a class"),
    pytest.param(3 + 4j, id="complex"),
]


@pytest.mark.parametrize("value", STABLE_VALUES)
def test_every_celery_serializable_type_survives_a_pickle_redelivery(value: Any) -> None:
    # A redelivery under the pickle serializer rebuilds every object: new addresses,
    # and in a worker a new hash seed.
    assert one(value) == one(pickle.loads(pickle.dumps(value)))
    assert FORMAT.fullmatch(one(value))


@pytest.mark.parametrize(
    "value",
    [
        (1, ("a", None)),
        {"a": [1, 2.5], "b": {"c": None}},
        datetime.datetime(2024, 5, 1, 12, 30, 1, 5),
        datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
        datetime.date(2024, 5, 1),
        datetime.time(12, 30),
        decimal.Decimal("12.50"),
        uuid.UUID(int=42),
        b"bytes",
    ],
)
def test_values_survive_a_json_redelivery(value: Any) -> None:
    assert one(value) == one(kombu_json.loads(kombu_json.dumps(value)))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"ab", b"ba"),
        (b"ab", "ab"),
        (datetime.date(2024, 5, 1), datetime.datetime(2024, 5, 1)),
        (
            datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
            datetime.datetime(2024, 5, 1),
        ),
        (datetime.time(1), datetime.time(2)),
        (datetime.timedelta(1), datetime.timedelta(2)),
        (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
        (decimal.Decimal("1"), 1),
        (uuid.UUID(int=1), uuid.UUID(int=2)),
        (uuid.UUID(int=1), uuid.UUID(int=1).hex),
        (Colour.RED, Colour.BLUE),
        (Colour.RED, "red"),
        (Level.LOW, 1),
        (Parcel(1.5, {"a"}), Parcel(1.5, {"b"})),
        (Parcel(1.5, {"a"}), Box(1.5, {"a"})),
        (Charge(id="a", amount=decimal.Decimal(1)), Charge(id="b", amount=decimal.Decimal(1))),
        (Order("A1", {"x"}), Order("A2", {"x"})),
        (Slotted(1, "b"), Slotted(2, "b")),
        (Money(1), Money(2)),
        (Money(1), "Money(1)"),
        pytest.param(10**5000, 10**5000 + 1, id="huge ints"),
        (Hooked("a"), Hooked("b")),
    ],
)
def test_other_values_give_other_fingerprints(first: Any, second: Any) -> None:
    assert one(first) != one(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"ab", bytearray(b"ab")),
        (b"ab", memoryview(b"ab")),
        ({"a", "b"}, frozenset({"a", "b"})),
        (Parcel(1.5, {"a"}, cache={"x": 1}), Parcel(1.5, {"a"}, cache={})),
        (Money(7), Money(7)),
        (Hooked("a"), Hooked("a")),
    ],
)
def test_equal_values_give_equal_fingerprints(first: Any, second: Any) -> None:
    assert one(first) == one(second)


def test_a_type_registered_with_kombu_is_what_kombu_sends() -> None:
    class Celsius:
        def __init__(self, degrees: float) -> None:
            self.degrees = degrees

        def __repr__(self) -> str:
            return f"<Celsius at {hex(id(self))}>"  # would be refused without kombu's encoder

    kombu_json.register_type(Celsius, "celsius", lambda c: c.degrees, Celsius)
    try:
        assert one(Celsius(21.5)) == one(Celsius(21.5))
        assert one(Celsius(21.5)) != one(Celsius(22.0))
    finally:
        kombu_json._encoders.pop(Celsius)
        kombu_json._decoders.pop("celsius")


# -- Unstable arguments are refused ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "where", "type_name"),
    [
        ([Connection("s")], {}, "args[0]", "test_fingerprint.Connection"),
        ([1, lambda: 1], {}, "args[1]", "builtins.function"),
        ([], {"callback": [].append}, "kwargs['callback']", "builtin_function_or_method"),
        ([threading.Lock()], {}, "args[0]", "_thread.lock"),
        ([mock.Mock()], {}, "args[0]", "unittest.mock.Mock"),
        ([Holder()], {}, "args[0].conn", "test_fingerprint.Connection"),
        ([1, Job("j", Connection("s"))], {}, "args[1].conn", "test_fingerprint.Connection"),
        ([], {"order": {"conn": Connection("s")}}, "kwargs['order']['conn']", "Connection"),
        ([[1, [2, Connection("s")]]], {}, "args[0][1][1]", "test_fingerprint.Connection"),
        ([{Connection("s")}], {}, "args[0]{<an item>}", "test_fingerprint.Connection"),
        ([{1: Connection("s")}], {}, "args[0][<int key>]", "test_fingerprint.Connection"),
        ([Broken()], {}, "args[0]", "test_fingerprint.Broken"),
    ],
)
def test_an_unstable_argument_is_refused_with_its_place_and_type(
    args: list[Any], kwargs: dict[str, Any], where: str, type_name: str
) -> None:
    with pytest.raises(UnstableArgumentsError) as caught:
        fingerprint(args, kwargs)
    error = caught.value
    assert error.argument == where
    assert type_name in error.type_name
    assert f"{where} is a {error.type_name}" in str(error)
    assert "instead" in str(error)  # says what to do


def test_a_refusal_says_why_and_what_to_do_but_never_the_value() -> None:
    with pytest.raises(UnstableArgumentsError) as caught:
        fingerprint(["order-1"], {"conn": Connection("db-password")})
    message = str(caught.value)
    assert "kwargs['conn'] is a tests.unit.test_fingerprint.Connection" in message
    assert "memory address" in message
    assert "__repr__ that does not depend on object identity" in message
    assert "dataclass" in message
    assert "db-password" not in message
    assert "order-1" not in message


def test_a_function_argument_is_refused_with_a_hint_for_functions() -> None:
    with pytest.raises(UnstableArgumentsError, match=r"args\[0\] is a builtins\.function.*"):
        one(test_a_function_argument_is_refused_with_a_hint_for_functions)
    with pytest.raises(UnstableArgumentsError, match="dotted name as a str"):
        one(lambda: 1)


def test_a_repr_that_raises_is_refused_and_chained() -> None:
    with pytest.raises(UnstableArgumentsError, match=r"its __repr__ raised ValueError") as caught:
        one(Broken())
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(UnstableArgumentsError, match=r"kwargs\['items'\] contains itself"):
        fingerprint([], {"items": loop})


def test_the_refusal_is_a_configuration_error_that_survives_pickling() -> None:
    with pytest.raises(UnstableArgumentsError) as caught:
        one(Connection("s"))
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, DurableError)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.argument, copy.type_name) == (
        str(error),
        error.argument,
        error.type_name,
    )
    assert type(error)(*error.args).message == error.message  # how Celery rebuilds it


# -- The format --------------------------------------------------------------------


def test_the_format_has_one_digest_per_argument_and_sorted_keywords() -> None:
    value = fingerprint(["a", "b", "a"], {"qty": 1, "order_id": "o"})
    match = FORMAT.fullmatch(value)
    assert match is not None
    first, second, third = match.group(1).split(",")
    assert first == third != second
    assert [item.split("=")[0] for item in match.group(2).split(",")] == ["order_id", "qty"]
    assert fingerprint(None, None) == fingerprint((), {}) == "v1|a:|k:"


def test_an_argument_keeps_its_digest_wherever_it_is_passed() -> None:
    positional = fingerprint([5], {}).split("|")[1].removeprefix("a:")
    assert fingerprint([], {"n": 5}) == f"v1|a:|k:n={positional}"


def test_odd_keyword_names_cannot_break_the_format() -> None:
    value = fingerprint([], {"a,b=c|d": 1, "größe": 2, "%": 3})
    assert FORMAT.fullmatch(value)
    assert "a%2Cb%3Dc%7Cd=" in value
    odd = fingerprint([], {1: "x"})  # only apply(kwargs=...) can send this
    assert re.fullmatch(r"v1\|a:\|k:#[0-9a-f]{10}=[0-9a-f]{10}", odd)


# -- Naming the difference ---------------------------------------------------------


def test_describe_difference_names_positions_and_keywords_never_values() -> None:
    recorded = fingerprint(["o-1", 3, "x"], {"qty": 1, "note": "n"})
    asked = fingerprint(["o-1", 4], {"qty": 2, "rush": True})
    assert describe_difference(recorded, asked) == (
        "args[1] differs; args[2] was removed; kwargs['note'] was removed; "
        "kwargs['qty'] differs; kwargs['rush'] was added"
    )


def test_describe_difference_of_added_arguments() -> None:
    assert describe_difference(fingerprint([1], {}), fingerprint([1, 2], {"qty": 3})) == (
        "args[1] was added; kwargs['qty'] was added"
    )


def test_describe_difference_of_equal_fingerprints() -> None:
    same = fingerprint([1], {"a": 2})
    assert describe_difference(same, same) == "no argument differs"


def test_describe_difference_unquotes_odd_names() -> None:
    recorded = fingerprint([], {"a,b": 1})
    asked = fingerprint([], {"a,b": 2, 7: 1})
    description = describe_difference(recorded, asked)
    assert description.startswith("a keyword whose name is not a str (#")
    assert description.endswith("was added; kwargs['a,b'] differs")


def test_describe_difference_of_an_old_fingerprint_says_only_that_they_differ() -> None:
    old = "0123456789abcdef01234567"  # what invocation.fingerprint stored before
    described = describe_difference(old, fingerprint(["o-1"], {}))
    assert described.startswith("the arguments differ")
    assert "older celery-durable" in described


def test_describe_difference_of_an_unreadable_fingerprint() -> None:
    assert describe_difference("v9|whatever", fingerprint([], {})).startswith(
        "the arguments differ"
    )
