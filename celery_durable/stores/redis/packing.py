"""A completed invocation's steps packed into one string key (``InvocationKeys.steps``).

At finish a completed invocation's journal (a list of JSON entries), its call (a string
key) and its seed (a field of the meta hash) are replaced by one string::

    \\x01 <seed> : <bytes of the call> : <call> <the entries, compressed>

The entries are joined by newlines (compact JSON has none) and compressed with raw
deflate (``zlib``, level 9) primed with ``DICTIONARY``: the keys every entry repeats.
Ten entries of a small value (74 B of JSON each) compress to ≈ 100 B. The worker
compresses the entries it holds; ``finish.lua`` writes the rest, from what is stored
(the worker's own idea of its call can differ from the stored one, after a wake-up
re-published it). Lua in Redis has no zlib: only a completed invocation is packed,
because no script reads its steps again.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

#: First byte of a pack: its layout and dictionary, so that another can follow.
VERSION = b"\x01"
#: What deflate may refer back to before the first entry: the text entries repeat,
#: the most common last (nearer is cheaper). Changing it needs a new ``VERSION``.
DICTIONARY = (
    b'{"k":"call","n":"","t":17,"d":,"a":2,"c":"pickle","s":"error","e":{"type":"",'
    b'"message":"","traceback":""}}\n{"k":"sleep","n":"","t":17,"d":,"s":"ok","v":null}\n'
    b'{"k":"run","n":"","t":17,"d":,"s":"ok","v":"'
)
_WBITS = -15  # raw deflate: no zlib header and checksum (6 B); Redis keeps the bytes


def compress_entries(entries: Sequence[str]) -> bytes | None:
    """The compressed part of a pack, or None when ``entries`` cannot be packed (one
    holds a newline) or it would not be smaller than they are."""
    text = "\n".join(entries).encode()
    if any("\n" in entry for entry in entries):
        return None
    packer = zlib.compressobj(9, zlib.DEFLATED, _WBITS, zdict=DICTIONARY)
    packed = packer.compress(text) + packer.flush()
    return packed if len(packed) < len(text) - max(len(entries) - 1, 0) else None


def pack(seed: str, call: str, entries: Sequence[str]) -> bytes:
    """The whole pack, as ``finish.lua`` writes it (for tests and tools)."""
    packed = compress_entries(entries)
    if packed is None:
        raise ValueError("these entries are not packed")
    data = call.encode()
    return b"%s%s:%d:%s%s" % (VERSION, seed.encode(), len(data), data, packed)


def unpack(value: bytes) -> tuple[str, str, list[str]]:
    """The seed, the call and the entries of a packed value.

    Raises:
        ValueError: it is not a pack of this layout.
    """
    if value[:1] != VERSION:
        raise ValueError(f"not a pack of celery-durable steps (first byte {value[:1]!r})")
    seed, _, rest = value[1:].partition(b":")
    length, _, rest = rest.partition(b":")
    try:
        if not length.isdigit() or not (seed.isdigit() or seed == b""):
            raise ValueError("no seed and call length")
        size = int(length)
        call = rest[:size].decode()
        unpacker = zlib.decompressobj(_WBITS, zdict=DICTIONARY)
        text = (unpacker.decompress(rest[size:]) + unpacker.flush()).decode()
        if not unpacker.eof:
            raise ValueError("the entries are cut short")
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a pack of celery-durable steps ({exc})") from None
    return seed.decode(), call, text.split("\n") if text else []


def digest(value: bytes) -> str:
    """SHA-1 of ``value``, hex: what Lua's ``redis.sha1hex`` gives for the same bytes."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()
