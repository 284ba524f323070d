"""The Redis journal store: one Lua script per operation, one round trip each.

This is the only module that imports ``redis``. Scripts live in ``lua/`` and are
called by SHA1; the source is sent only when Redis answers ``NOSCRIPT`` (after a
restart or a ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from celery_durable.errors import ConfigurationError, JournalError, JournalUnavailableError
from celery_durable.journal.store import Started
from celery_durable.keys import KeySpace

T = TypeVar("T")

#: maxmemory policies under which Redis never evicts a key that has no expiry.
#: Running journals have none; finished ones do and could go before their time.
_SAFE_POLICIES = frozenset({"noeviction"})

#: Errors that mean "not now" rather than "never": the connection, and replies such as
#: out of memory under noeviction, a replica after failover, a cluster mid-change, a
#: script running too long, or a failed save that stops writes.
_UNAVAILABLE_ERRORS = (
    RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, TryAgainError,
    ClusterDownError,
)  # fmt: skip
_UNAVAILABLE_REPLIES = ("BUSY ", "NOREPLICAS", "MISCONF")
_VOLATILE_POLICIES = frozenset({"volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"})


class _Script:
    """A Lua script from ``lua/``, called by SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (
            resources.files("celery_durable.stores.redis").joinpath(f"lua/{name}.lua").read_text()
        )
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


_START, _APPEND, _ATTEMPT, _GUARD, _FINISH = (
    _Script(name) for name in ("start", "append", "attempt", "guard", "finish")
)


class RedisJournalStore:
    """Keeps journals in Redis under one key prefix."""

    def __init__(self, client: redis.Redis, keys: KeySpace, where: str = "Redis") -> None:
        self._client = client
        self._keys = keys
        self._where = where
        # Typed here once: redis-py leaves execute_command untyped.
        self._command: Callable[..., Any] = client.execute_command
        self._last_id = ""
        self._last_keys = keys.invocation("")

    @classmethod
    def from_url(cls, url: str, keys: KeySpace) -> RedisJournalStore:
        """Return a store on a new connection pool to ``url``."""
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30
        )
        return cls(client, keys, where=_redact(url))

    @property
    def client(self) -> redis.Redis:
        return self._client

    # -- JournalStore ---------------------------------------------------------------

    def start(
        self, task_id: str, task_name: str, fingerprint: str, seed: int, retries: int
    ) -> Started:
        k = self._keys.invocation(task_id)
        now = time.time()
        args = (k.meta, k.journal, task_name, fingerprint, str(seed), f"{now:.6f}", retries)

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            command: Callable[..., Any] = pipe.execute_command
            command("EVALSHA", _START.sha, 2, *args)
            command("LRANGE", k.journal, 0, -1)
            command("ZADD", self._keys.index, "NX", now, task_id)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(task_id, "start"):
            reply, entries, _ = self._retrying_noscript(call)
        created, name, fp, stored_seed, status, outcome, length, crashes, attempt, guard = reply
        return Started(
            created=bool(created),
            task_name=name,
            fingerprint=fp,
            seed=int(stored_seed),
            status=status,
            outcome=outcome,
            entries=entries,
            length=int(length),
            crashes=int(crashes),
            attempt=attempt,
            guard=None if guard is None else int(guard),
        )

    def append(self, task_id: str, index: int, entry: str, ends_attempts: bool) -> str | None:
        # The hot path: one EVALSHA, and nothing else that can be avoided.
        if task_id != self._last_id:
            self._last_id, self._last_keys = task_id, self._keys.invocation(task_id)
        k = self._last_keys
        flag = "1" if ends_attempts else "0"
        try:
            reply: str | None = self._eval(_APPEND, k.meta, k.journal, index, entry, flag)
        except RedisError as exc:
            raise self._journal_error(exc, task_id, f"write step {index} of") from exc
        return reply

    def record_attempt(self, task_id: str, index: int, attempt: str) -> str | None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"record a failed attempt of step {index} of"):
            reply: str | None = self._eval(
                _ATTEMPT, k.meta, k.journal, index, attempt, f"{time.time():.6f}"
            )
        return reply

    def guard(self, task_id: str, index: int) -> str | None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"guard at-most-once step {index} of"):
            reply: str | None = self._eval(_GUARD, k.meta, k.journal, index)
        return reply

    def finish(
        self, task_id: str, status: str, outcome: str, retention: float
    ) -> tuple[str, str] | None:
        k = self._keys.invocation(task_id)
        ms = max(1, int(retention * 1000))
        with self._errors(task_id, "finish"):
            reply = self._eval(
                _FINISH, k.meta, k.journal, status, outcome, f"{time.time():.6f}", ms
            )
        return None if reply is None else (reply[0], reply[1])

    def pause(self, task_id: str, reason: str) -> None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "pause"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hset(
                k.meta,
                mapping={"status": "paused", "paused_reason": reason, "updated_at": time.time()},
            )
            pipe.hincrby(k.meta, "frontier_starts", -1)  # this execution ends cleanly
            pipe.execute()

    def read(self, task_id: str) -> tuple[dict[str, str], list[str]] | None:
        return self.read_many([task_id])[0]

    def read_many(self, task_ids: Sequence[str]) -> list[tuple[dict[str, str], list[str]] | None]:
        """Return the metadata and raw entries of several invocations in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for task_id in task_ids:
            k = self._keys.invocation(task_id)
            pipe.hgetall(k.meta)
            pipe.lrange(k.journal, 0, -1)
        with self._errors(",".join(task_ids[:3]), "read"):
            replies = pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return [(meta, entries) if meta else None for meta, entries in pairs]

    def recent_ids(self, limit: int, offset: int = 0) -> list[str]:
        with self._errors("*", "list"):
            ids = self._command("ZREVRANGE", self._keys.index, offset, offset + limit - 1)
        return list(ids)

    def forget(self, task_id: str) -> bool:
        """Delete an invocation's keys; return whether it existed."""
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "forget"):
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(k.meta, k.journal)
            pipe.zrem(self._keys.index, task_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def forget_index(self, task_ids: Sequence[str]) -> None:
        """Drop ids whose invocation expired from the listing index."""
        if task_ids:
            with self._errors("*", "clean the index of"):
                self._client.zrem(self._keys.index, *task_ids)

    # -- Worker start-up --------------------------------------------------------------

    def check_eviction_policy(self, mode: str) -> str | None:
        """Refuse or describe a ``maxmemory-policy`` that could evict journals.

        Args:
            mode: ``refuse`` raises for any policy that could evict a running journal,
                ``warn`` only returns the warning, ``ignore`` skips the check.

        Returns:
            A warning to log, or None when the policy is safe or not checked.

        Raises:
            ConfigurationError: the policy could evict running journals and ``mode``
                is ``refuse``.
        """
        if mode == "ignore":
            return None
        try:
            policy = self._client.config_get("maxmemory-policy").get("maxmemory-policy", "")
        except ResponseError as exc:  # managed Redis often forbids CONFIG
            return (
                f"could not read maxmemory-policy of {self._where} ({exc}); make sure it is "
                "'noeviction' or journals may be evicted"
            )
        except RedisError as exc:
            raise ConfigurationError(
                f"durable_redis_url: cannot reach {self._where} to check it at worker "
                f"start ({type(exc).__name__}: {exc}). Start Redis or fix the setting."
            ) from exc
        if policy in _SAFE_POLICIES:
            return None
        if policy in _VOLATILE_POLICIES:
            return (
                f"{self._where} has maxmemory-policy {policy!r}: finished journals may be "
                "evicted before durable_retention ends, and a late redelivery would then run "
                "the task again. Set it to 'noeviction'."
            )
        message = (
            f"{self._where} has maxmemory-policy {policy!r}, which can evict running journals "
            "and make tasks repeat steps. Set maxmemory-policy to 'noeviction' (CONFIG SET "
            "maxmemory-policy noeviction), or set durable_eviction_check = 'warn' to run anyway."
        )
        if mode == "refuse":
            raise ConfigurationError(message)
        return message

    # -- Plumbing ---------------------------------------------------------------------

    def _eval(self, script: _Script, *keys_then_args: Any) -> Any:
        command = self._command
        try:
            return command("EVALSHA", script.sha, 2, *keys_then_args)
        except NoScriptError:
            return command("EVAL", script.source, 2, *keys_then_args)

    def _retrying_noscript(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except NoScriptError:
            for script in (_START, _APPEND, _ATTEMPT, _GUARD, _FINISH):
                self._command("SCRIPT", "LOAD", script.source)
            return call()

    @contextmanager
    def _errors(self, task_id: str, action: str) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise self._journal_error(exc, task_id, action) from exc

    def _journal_error(self, exc: RedisError, task_id: str, action: str) -> JournalError:
        text = str(exc)
        unavailable = isinstance(exc, _UNAVAILABLE_ERRORS) or text.startswith(_UNAVAILABLE_REPLIES)
        if isinstance(exc, ResponseError) and not unavailable:
            if text.startswith("GONE"):
                return JournalError(
                    f"cannot {action} invocation {task_id}: it no longer exists in "
                    f"{self._where} (forgotten or expired while it ran). Nothing was written."
                )
            return JournalError(f"{self._where} refused to {action} invocation {task_id}: {text}")
        if unavailable:
            return JournalUnavailableError(
                f"cannot {action} invocation {task_id}: {self._where} is unavailable "
                f"({type(exc).__name__}: {exc}). The write may or may not have been made; "
                "either way the next delivery resumes from what the journal holds, and the "
                "task is retried until Redis takes writes again."
            )
        return JournalError(
            f"cannot {action} invocation {task_id} in {self._where}: {type(exc).__name__}: {exc}"
        )


def _redact(url: str) -> str:
    """Return ``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user}:***@{host}" if user else f"***@{host}"
    return f"Redis at {scheme}{sep}{rest}"
