"""The layout of a completed invocation's packed steps (``stores.redis.packing``)."""

from __future__ import annotations

import zlib

import pytest

from celery_durable.stores.redis.packing import pack, pack_entries, pays, unpack

CALL = '{"task":"shop.checkout","args":["é"],"kwargs":{},"options":{}}'
ENTRIES = [f'{{"k":"run","n":"s{i}","t":0,"d":0,"s":"ok","v":"{"x" * 10}"}}' for i in range(10)]


def test_a_pack_gives_back_its_call_and_entries() -> None:
    assert unpack(pack(CALL, ENTRIES)) == (CALL, ENTRIES)
    assert unpack(pack("", [])) == ("", [])
    # The call's length counts bytes: a call with non-ASCII text still splits right.
    assert unpack(pack("é:1", ["ü\n"])) == ("é:1", ["ü\n"])


def test_ten_small_entries_pack_to_a_fraction_and_one_does_not() -> None:
    packed = pack_entries(ENTRIES)
    assert pays(packed, ENTRIES)
    assert len(packed) < sum(map(len, ENTRIES)) / 3
    assert not pays(pack_entries(ENTRIES[:1]), ENTRIES[:1])


@pytest.mark.parametrize(
    "value",
    [b"", b"\x02" + pack(CALL, ENTRIES)[1:], b"\x01x:", b"\x0110", b"\x013:abcnot zlib",
     b"\x010:" + zlib.compress(b'{"not":"a list"}'), b"\x010:" + zlib.compress(b"[1]")],
)  # fmt: skip
def test_what_is_not_a_pack_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a pack"):
        unpack(value)
