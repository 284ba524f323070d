"""A completed invocation's steps packed into one string key (``InvocationKeys.steps``).

At finish a completed invocation's journal (a list of JSON entries) and its call (a
string key) are replaced by one string: a version byte, the call's length in decimal
and ``:``, the call as stored, then the entries compressed (zlib of their JSON array).
Ten entries of a small value (≈ 75 B of JSON each, much of it the same keys) compress
to ≈ 150 B. The worker compresses the entries it wrote; ``finish.lua`` puts the stored
call in front (the worker's own idea of its call can differ from the stored one, after
a wake-up re-published it). Lua in Redis has no zlib: only a completed invocation is
packed, because no script reads its steps again.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence

#: First byte of a pack: its layout, so that another can follow.
VERSION = b"\x01"


def pack_entries(entries: Sequence[str]) -> bytes:
    """The compressed part of a pack: ``entries`` as a JSON array, zlib level 9."""
    text = json.dumps(list(entries), separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode(), 9)


def pack(call: str, entries: Sequence[str]) -> bytes:
    """The whole pack of ``call`` and ``entries``, as ``finish.lua`` writes it."""
    data = call.encode()
    return VERSION + b"%d:" % len(data) + data + pack_entries(entries)


def unpack(value: bytes) -> tuple[str, list[str]]:
    """The call and the entries of a packed value.

    Raises:
        ValueError: it is not a pack of this layout.
    """
    if value[:1] != VERSION:
        raise ValueError(f"not a pack of celery-durable steps (first byte {value[:1]!r})")
    length, colon, rest = value[1:].partition(b":")
    try:
        if not colon or not length.isdigit():
            raise ValueError("no call length")
        size = int(length)
        call = rest[:size].decode()
        entries = json.loads(zlib.decompress(rest[size:]).decode())
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a pack of celery-durable steps ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ValueError("not a pack of celery-durable steps (entries are not texts)")
    return call, entries


def pays(packed: bytes, entries: Sequence[str]) -> bool:
    """Whether the compressed ``packed`` is smaller than the ``entries`` it replaces."""
    return len(packed) < sum(len(entry.encode()) for entry in entries)


def digest(value: bytes) -> str:
    """SHA-1 of ``value``, hex: what Lua's ``redis.sha1hex`` gives for the same bytes."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()
