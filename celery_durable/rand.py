"""Deterministic random values for durable code.

``DurableRandom`` draws from the invocation's checkpointed seed, so every replay of
an invocation sees the same values. Its core draws follow the algorithm below, not
CPython's Mersenne Twister, so they are identical bit for bit on every platform and
Python version:

1. The seed is an unsigned 64-bit integer, chosen once per invocation.
2. Values drawn at journal position ``p`` (after ``p`` durable operations) come from
   a stream of their own. Its starting state is the first 8 bytes, read as a
   little-endian integer, of ``blake2b(seed.to_bytes(8, "little") +
   p.to_bytes(8, "little"), digest_size=8, person=b"celery-durable")``. Adding a
   draw between two steps therefore never shifts the values of later positions.
3. ``uint64()`` is the next output of SplitMix64 over that state.
4. ``getrandbits(k)`` joins ``ceil(k / 64)`` outputs, the first as the most
   significant word, and keeps the top ``k`` bits.
5. ``random()`` and ``float64()`` are ``(uint64() >> 11) * 2**-53``.
6. ``uuid4()`` is ``uuid.UUID(int=(uint64() << 64) | uint64(), version=4)``.

Everything else ``random.Random`` offers (``randint``, ``choice``, ``shuffle``,
``gauss``, ...) is CPython's code built on ``random()`` and ``getrandbits()``; it is
deterministic for one Python version. Not for cryptography.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def stream_state(seed: int, position: int) -> int:
    """Return the SplitMix64 starting state for draws at journal ``position``."""
    digest = hashlib.blake2b(
        seed.to_bytes(8, "little") + position.to_bytes(8, "little"),
        digest_size=8,
        person=b"celery-durable",
    ).digest()
    return int.from_bytes(digest, "little")


class DurableRandom(random.Random):
    """A ``random.Random`` whose values depend only on a seed and a journal position."""

    def __init__(self, seed: int = 0, position: int = 0) -> None:
        self._state: int | None = None
        super().__init__(seed)
        self.at_position(position)

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Restart from seed ``a`` (an unsigned 64-bit integer) at position 0."""
        if not isinstance(a, int) or not 0 <= a <= _MASK64:
            raise ValueError(f"a DurableRandom seed is an unsigned 64-bit integer, not {a!r}")
        self._seed = a
        self.at_position(0)
        self.gauss_next = None

    def at_position(self, position: int) -> None:
        """Switch to the stream of journal ``position``; its state is made on first draw."""
        self._position = position
        self._state = None

    def uint64(self) -> int:
        """Return a uniformly random integer in ``[0, 2**64)``."""
        state = self._state
        if state is None:
            state = stream_state(self._seed, self._position)
        state = (state + _GOLDEN) & _MASK64
        self._state = state
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def getrandbits(self, k: int) -> int:
        """Return a non-negative integer with ``k`` random bits."""
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        words = -(-k // 64)
        value = 0
        for _ in range(words):
            value = (value << 64) | self.uint64()
        return value >> (64 * words - k)

    def random(self) -> float:
        """Return a float in ``[0.0, 1.0)`` with 53 random bits."""
        return (self.uint64() >> 11) * (1.0 / 9007199254740992.0)

    float64 = random

    def uuid4(self) -> uuid.UUID:
        """Return a version-4 UUID built from 128 drawn bits."""
        return uuid.UUID(int=(self.uint64() << 64) | self.uint64(), version=4)

    def getstate(self) -> tuple[Any, ...]:
        return (self._seed, self._position, self._state, self.gauss_next)

    def setstate(self, state: tuple[Any, ...]) -> None:
        self._seed, self._position, self._state, self.gauss_next = state
