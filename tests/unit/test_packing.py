"""The layout of a completed invocation's packed steps (``stores.redis.packing``)."""

from __future__ import annotations

import zlib

import pytest

from celery_durable.stores.redis.packing import compress_entries, pack, unpack

CALL = '{"task":"shop.checkout","args":["é"],"kwargs":{},"options":{}}'
ENTRIES = [f'{{"k":"run","n":"s{i}","t":0,"d":0,"s":"ok","v":"{"x" * 10}"}}' for i in range(10)]


def test_a_pack_gives_back_its_seed_call_and_entries() -> None:
    assert unpack(pack("123", CALL, ENTRIES)) == ("123", CALL, ENTRIES)
    assert unpack(pack("", "", ENTRIES[:1])) == ("", "", ENTRIES[:1])
    # The call's length counts bytes: a call with non-ASCII text and colons still splits.
    assert unpack(pack("7", "é:1:", ["ü" * 40])) == ("7", "é:1:", ["ü" * 40])


def test_ten_small_entries_pack_to_a_fraction() -> None:
    packed = compress_entries(ENTRIES)
    assert packed is not None
    assert len(packed) < sum(map(len, ENTRIES)) / 4


def test_what_would_not_be_smaller_or_has_a_newline_is_not_packed() -> None:
    assert compress_entries(["{}"]) is None  # deflate's own bytes are more than that
    assert compress_entries([]) is None
    assert compress_entries([*ENTRIES, '{"k":"run",\n"n":"x"}']) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"\x02" + pack("1", CALL, ENTRIES)[1:], b"\x01x:3:abc", b"\x011:x:", b"\x0110",
     b"\x011:3:abcnot deflate", pack("1", CALL, ENTRIES)[:-3],
     b"\x011:0:" + zlib.compress(b"[1]")],
)  # fmt: skip
def test_what_is_not_a_pack_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a pack"):
        unpack(value)
