"""The layouts of a completed invocation's packed steps (``stores.redis.packing``)."""

from __future__ import annotations

import zlib

import pytest

from celery_durable.stores.redis.packing import CALL_APART, WITH_CALL, compress, pack, unpack

CALL = '{"task":"shop.checkout","args":["é"],"kwargs":{},"options":{}}'
ENTRIES = [f'{{"k":"run","n":"s{i}","t":0,"d":0,"s":"ok","v":"{"x" * 10}"}}' for i in range(10)]


def test_a_pack_gives_back_its_seed_call_and_entries() -> None:
    packed = pack("123", CALL, ENTRIES)
    assert packed[:1] == WITH_CALL
    assert unpack(packed) == ("123", CALL, ENTRIES)
    assert unpack(pack("", "", ENTRIES[:1])) == ("", "", ENTRIES[:1])


def test_a_stored_call_other_than_the_finishers_is_kept_as_stored() -> None:
    packed = pack("7", CALL, ENTRIES, stored_call="é:1:")
    assert packed[:1] == CALL_APART
    # The call's length counts bytes: a call with non-ASCII text and colons still splits.
    assert unpack(packed) == ("7", "é:1:", ENTRIES)
    # A call with a newline cannot go in with the entries: it is stored apart.
    assert unpack(pack("7", "a\nb", ENTRIES)) == ("7", "a\nb", ENTRIES)


def test_ten_small_entries_and_their_call_pack_to_a_fraction() -> None:
    parts = compress(ENTRIES, CALL)
    assert parts is not None
    assert len(parts.entries) < sum(map(len, ENTRIES)) / 4
    assert len(parts.with_call) < len(parts.entries) + len(CALL) / 2


def test_what_would_not_be_smaller_or_has_a_newline_is_not_packed() -> None:
    assert compress(["{}"], CALL) is None  # deflate's own bytes are more than that
    assert compress([], CALL) is None
    assert compress([*ENTRIES, '{"k":"run",\n"n":"x"}'], CALL) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"\x03" + pack("1", CALL, ENTRIES)[1:], b"\x01x:3:abc", b"\x011:x:", b"\x0110",
     b"\x011:3:abcnot deflate", pack("1", CALL, ENTRIES)[:-3], b"\x02x:",
     b"\x011:0:" + zlib.compress(b"[1]")],
)  # fmt: skip
def test_what_is_not_a_pack_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="not a pack"):
        unpack(value)
