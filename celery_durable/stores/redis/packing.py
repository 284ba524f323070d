"""A completed invocation's steps packed into one string key (``InvocationKeys.steps``).

At finish a completed invocation's journal (a list of JSON entries), its call (a string
key) and its seed (a field of the meta hash) are replaced by one string, in one of two
layouts::

    \\x02 <seed> : <the entries, a newline, the call: compressed>
    \\x01 <seed> : <bytes of the call> : <call> <the entries, compressed>

The entries are joined by newlines (compact JSON has none) and compressed with raw
deflate (``zlib``, level 9) primed with ``DICTIONARY``: the keys every entry and call
repeat. Ten entries of a small value (74 B of JSON each) and a call of 233 B compress
to ≈ 190 B. The worker compresses what it holds, both ways (``compress``); ``finish.lua``
writes the first layout when the worker's call is the stored one (same SHA-1), else the
second, with the call as stored (a wake-up may have re-published it with other options).
Lua in Redis has no zlib: only a completed invocation is packed, because no script reads
its steps again.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from celery_durable.errors import JournalError

#: First byte of each layout.
WITH_CALL, CALL_APART = b"\x02", b"\x01"
#: What deflate may refer back to before the first entry: the text entries and calls
#: repeat, the most common last (nearer is cheaper). Changing it needs new layout bytes.
DICTIONARY = (
    b'{"task":"","args":[],"kwargs":{},"options":{"task_id":"","reply_to":"",'
    b'"ignore_result":false,"priority":0,"queue":""}}\n'
    b'{"k":"call","n":"","t":17,"d":,"a":2,"c":"pickle","s":"error","e":{"type":"",'
    b'"message":"","traceback":""}}\n{"k":"sleep","n":"","t":17,"d":,"s":"ok","v":null}\n'
    b'{"k":"run","n":"","t":17,"d":,"s":"ok","v":"'
)
_WBITS = -15  # raw deflate: no zlib header and checksum (6 B); Redis keeps the bytes


class Compressed(NamedTuple):
    """What ``finish.lua`` packs from: the entries alone, and the entries and the call."""

    entries: bytes
    with_call: bytes
    """Empty when the call cannot go in (it holds a newline)."""
    call_digest: str
    """SHA-1 of the call in ``with_call``: the script uses it only if the stored call's
    is the same."""


def compress(entries: Sequence[str], call: str) -> Compressed | None:
    """The compressed parts of a pack, or None when ``entries`` are not packed: one holds
    a newline, or compressed they would not be smaller."""
    if any("\n" in entry for entry in entries):
        return None
    text = "\n".join(entries).encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, _WBITS, zdict=DICTIONARY)
    head = packer.compress(text)
    with_call = b""
    if "\n" not in call:
        other = packer.copy()  # the entries' work is done once for both
        with_call = head + other.compress(b"\n" + call.encode()) + other.flush()
    alone = head + packer.flush()
    if len(alone) >= len(text) - max(len(entries) - 1, 0):  # the entries' own bytes
        return None
    return Compressed(alone, with_call, digest(call.encode()) if with_call else "")


def pack(seed: str, call: str, entries: Sequence[str], stored_call: str | None = None) -> bytes:
    """The whole pack, as ``finish.lua`` writes it when the stored call is
    ``stored_call`` (default: ``call``). For tests and tools."""
    parts = compress(entries, call)
    if parts is None:
        raise ValueError("these entries are not packed")
    stored = call if stored_call is None else stored_call
    if parts.with_call and parts.call_digest == digest(stored.encode()):
        return WITH_CALL + seed.encode() + b":" + parts.with_call
    data = stored.encode()
    return CALL_APART + b"%s:%d:%s%s" % (seed.encode(), len(data), data, parts.entries)


def unpack(value: bytes) -> tuple[str, str, list[str]]:
    """The seed, the call and the entries of a packed value.

    Raises:
        ValueError: it is not a pack of either layout.
    """
    layout = value[:1]
    if layout not in (WITH_CALL, CALL_APART):
        raise ValueError(f"not a pack of celery-durable steps (first byte {layout!r})")
    seed, _, rest = value[1:].partition(b":")
    try:
        if not (seed.isdigit() or seed == b""):
            raise ValueError("no seed")
        call = ""
        if layout == CALL_APART:
            length, _, rest = rest.partition(b":")
            if not length.isdigit():
                raise ValueError("no call length")
            call, rest = rest[: int(length)].decode(), rest[int(length) :]
        unpacker = zlib.decompressobj(_WBITS, zdict=DICTIONARY)
        text = (unpacker.decompress(rest) + unpacker.flush()).decode()
        if not unpacker.eof:
            raise ValueError("cut short")
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a pack of celery-durable steps ({exc})") from None
    entries = text.split("\n")
    if layout == WITH_CALL:
        if len(entries) < 2:
            raise ValueError("not a pack of celery-durable steps (no call)")
        call = entries.pop()
    return seed.decode(), call, entries


def unpack_stored(value: bytes, task_id: str, where: str) -> tuple[str, str, list[str]]:
    """``unpack`` of what invocation ``task_id`` keeps in ``where``.

    Raises:
        JournalError: it is not a pack (written by hand, or by a later release).
    """
    try:
        return unpack(value)
    except ValueError as exc:
        raise JournalError(
            f"the packed steps of invocation {task_id} in {where} are unreadable: {exc}"
        ) from None


def digest(value: bytes) -> str:
    """SHA-1 of ``value``, hex: what Lua's ``redis.sha1hex`` gives for the same bytes."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()
