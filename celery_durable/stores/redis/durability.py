"""Durability levels of journal writes: wait for replicas (``WAIT``) or the AOF (``WAITAOF``).

By default a write counts once the primary has it in memory. With
``durable_wait_replicas = n`` each journal write is followed, in the same round trip,
by ``WAIT n timeout``; with ``durable_wait_aof`` by ``WAITAOF 1 0 timeout`` (Redis 7.2
and later). A write that is not acknowledged in time is not durable: it raises
``JournalUnavailableError``, so the step is not reported done and the task is retried
through the outage path, where the next execution finds the entry if it survived (and
runs the step again if it did not: at least once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from celery_durable.errors import ConfigurationError, JournalUnavailableError
from celery_durable.stores.redis.lean import bulk


@dataclass(frozen=True, slots=True)
class Durability:
    """What a journal write waits for before it counts."""

    replicas: int = 0
    aof: bool = False
    timeout: float = 1.0
    """Seconds to wait for the acknowledgements."""

    @property
    def waits(self) -> bool:
        return bool(self.replicas or self.aof)

    def commands(self) -> list[tuple[Any, ...]]:
        """The commands that follow a write, as redis-py sends them."""
        timeout_ms = max(1, int(self.timeout * 1000))
        waits: list[tuple[Any, ...]] = []
        if self.replicas:
            waits.append(("WAIT", self.replicas, timeout_ms))
        if self.aof:
            waits.append(("WAITAOF", 1, 0, timeout_ms))
        return waits

    def packed(self) -> bytes:
        """The same commands in RESP, to send right after a hand-packed write."""
        out = b""
        for command in self.commands():
            parts = [str(part).encode() for part in command]
            out += b"*%d\r\n" % len(parts) + b"".join(bulk(part) for part in parts)
        return out

    def check(self, replies: list[Any], where: str, what: str) -> None:
        """Raise unless the replies of ``commands()`` say the write is durable.

        Raises:
            ConfigurationError: this Redis has no ``WAITAOF`` (before 7.2), or its AOF is
                off (``appendonly no``), so that ``WAITAOF`` refuses to wait.
            JournalUnavailableError: too few acknowledgements came in time.
            ResponseError: Redis refused the wait for another reason (the store maps it).
        """
        replies = list(replies)
        if self.replicas:
            acked = replies.pop(0)
            if isinstance(acked, ResponseError):
                raise acked
            if int(acked) < self.replicas:
                raise JournalUnavailableError(
                    f"cannot {what}: {where} had {acked} of durable_wait_replicas="
                    f"{self.replicas} replicas acknowledge it within {self.timeout:g} s, so it "
                    "is not durable. The task is retried until it is; the next execution finds "
                    "the write if it survived."
                )
        if self.aof:
            fsynced = replies.pop(0)
            if isinstance(fsynced, ResponseError):
                refusal = str(fsynced).lower()
                if "unknown command" in refusal:
                    raise ConfigurationError(
                        f"durable_wait_aof needs WAITAOF, which {where} does not have (it came "
                        "with Redis 7.2). Upgrade Redis, or turn durable_wait_aof off."
                    ) from fsynced
                if "appendonly" in refusal:
                    # Redis 7.2+ and Valkey: "WAITAOF cannot be used when numlocal is set
                    # but appendonly is disabled."
                    raise ConfigurationError(
                        f"durable_wait_aof waits for the AOF, which {where} does not keep "
                        "(appendonly no), so WAITAOF refuses to wait. Turn the AOF on "
                        "(appendonly yes), or turn durable_wait_aof off."
                    ) from fsynced
                raise fsynced
            if int(fsynced[0]) < 1:
                raise JournalUnavailableError(
                    f"cannot {what}: {where} did not write it to its AOF within "
                    f"{self.timeout:g} s (is appendonly on?), so it is not durable. The task is "
                    "retried until it is."
                )
