"""What every part of the Redis store shares: the client, the keys, scripts and errors.

The store is split by who calls it: ``store`` (an execution: start, steps, finish),
``waiting`` (suspension, completions from outside, wake-ups) and ``operators``
(reading, listing, forgetting, resuming). Each is a part of ``RedisJournalStore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from celery_durable.keys import KeySpace
from celery_durable.settings import redacted
from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.durability import Durability
from celery_durable.stores.redis.errors import (
    REDIS_ERRORS,
    CommandError,
    is_gone,
    journal_error,
)
from celery_durable.stores.redis.lean import LeanConnection, exchange
from celery_durable.stores.redis.scripts import Script

T = TypeVar("T")


class RedisBase:
    """The client, key space and plumbing of the Redis store."""

    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        where: str = "Redis",
        durability: Durability | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._where = where
        self._durability = durability or Durability()
        self._durable_tail = self._durability.packed()
        # Typed here once: redis-py leaves execute_command untyped.
        self._command: Callable[..., Any] = client.execute_command
        # The hot commands (start, append, finish) go through one held connection per
        # thread, packed by hand where they can be (lean.py); a cluster's client takes
        # redis-py's usual path, which routes each command to its slot's node.
        self._lean = LeanConnection(client) if type(client) is redis.Redis else None
        self._epoch_marked = False
        self._slots_noted: set[int] = set()

    @property
    def client(self) -> Any:
        """The redis-py client: ``redis.Redis``, or ``RedisCluster`` for a cluster."""
        return self._client

    def close(self) -> None:
        """Close every connection the store opened."""
        if self._lean is not None:
            self._lean.close()
        # A RedisCluster's close() leaves its nodes' connection pools open.
        disconnect = getattr(self._client, "disconnect_connection_pools", None)
        if disconnect is not None:
            disconnect()
        self._client.close()

    # -- Scripts ------------------------------------------------------------------------

    def _eval(self, script: Script, numkeys: int, *keys_then_args: Any) -> Any:
        command = self._command
        try:
            return command("EVALSHA", script.sha, numkeys, *keys_then_args)
        except NoScriptError:
            return command("EVAL", script.source, numkeys, *keys_then_args)

    def _hot_eval(self, script: Script, numkeys: int, *keys_then_args: Any) -> Any:
        """``_write`` through the held connection, for commands on the hot path."""
        if self._lean is None:
            return self._write(script, numkeys, *keys_then_args)
        packed = b"".join(
            self._lean.connection().pack_command("EVALSHA", script.sha, numkeys, *keys_then_args)
        )
        return self._send_write(packed, script, numkeys, *keys_then_args)

    def _write(self, script: Script, numkeys: int, *keys_then_args: Any) -> Any:
        """``_eval`` of a script that writes the journal, durable as the settings ask."""
        if not self._durability.waits:
            return self._eval(script, numkeys, *keys_then_args)
        # WAIT and WAITAOF wait for the writes of their own connection, so they follow
        # the script on the connection that runs it, in the same round trip.
        key = keys_then_args[0]
        commands = [("EVALSHA", script.sha, numkeys, *keys_then_args)]
        commands += self._durability.commands()

        def attempt() -> list[Any]:
            replies = self._together(key, commands)
            if isinstance(replies[0], BaseException):
                raise replies[0]
            return replies

        reply, *waits = self._loading_scripts(attempt)
        self._durability.check(waits, self._where, f"write ({script.name}) {key}")
        return reply

    def _send_write(self, packed: bytes, script: Script, numkeys: int, *args: Any) -> Any:
        """Send a hand-packed write on the held connection, with what makes it durable in
        the same round trip; return its reply."""
        assert self._lean is not None
        try:
            if not self._durability.waits:
                return self._lean.call(packed)
            count = 1 + len(self._durability.commands())
            reply, *waits = self._lean.call_many(packed + self._durable_tail, count)
            if isinstance(reply, BaseException):
                raise reply
            self._durability.check(waits, self._where, f"write ({script.name}) {args[0]}")
            return reply
        except NoScriptError:
            return self._write(script, numkeys, *args)

    def _together(self, key: str, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once on one connection of the Redis that has ``key``;
        return their replies, errors as exception objects (cluster: a MOVED reply
        refreshes the slot map, and the commands go again to the slot's new node)."""
        for _ in range(3):
            client = self._client_of(key)
            pool = client.connection_pool
            conn = pool.get_connection()
            try:
                replies = exchange(conn, b"".join(conn.pack_commands(commands)), len(commands))
            except (RedisConnectionError, RedisTimeoutError, OSError):
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
            if not (self._keys.cluster and any(isinstance(r, MovedError) for r in replies)):
                return replies
            self._client.nodes_manager.initialize()
        return replies

    def _client_of(self, key: str) -> Any:
        """The client of the Redis that has ``key``: on a cluster, that node's own."""
        if self._keys.cluster:
            return self._client.get_redis_connection(self._client.get_node_from_key(key))
        return self._client

    def _loading_scripts(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except NoScriptError:
            for script in scripts.ALL:
                # On a cluster, every primary needs it.
                self._client.script_load(script.source)
            return call()

    # -- Errors -------------------------------------------------------------------------

    @contextmanager
    def _errors(self, task_id: str, action: str) -> Iterator[None]:
        try:
            yield
        except REDIS_ERRORS as exc:
            raise self._error(exc, task_id, action) from exc

    def _error(self, exc: CommandError, task_id: str, action: str) -> BaseException:
        data_lost = is_gone(exc) and not self._epoch_present()
        return journal_error(exc, task_id, action, self._where, data_lost)

    def _mark_epoch(self) -> None:
        with self._errors("*", "mark the data set of"):
            self._command("SET", self._keys.epoch, f"{time.time():.0f}", "NX")
        self._epoch_marked = True

    def _epoch_present(self) -> bool:
        """Whether the data set is the one this store marked; marks a new one if not."""
        try:
            if self._command("EXISTS", self._keys.epoch):
                return True
            self._command("SET", self._keys.epoch, f"{time.time():.0f}", "NX")
        except REDIS_ERRORS:
            pass
        return False

    # -- A cluster's keys that span slots ------------------------------------------------

    def _note_slot(self, task_id: str) -> None:
        """Add an invocation's slot to the slots in use (cluster only), once per process.

        Outside the scripts, which may touch one slot only; a missed one would hide the
        slot's invocations from listings, never lose them.
        """
        if not self._keys.cluster:
            return
        slot = self._keys.slot(task_id)
        if slot not in self._slots_noted:
            self._command("SADD", self._keys.slots_in_use, slot)
            self._slots_noted.add(slot)


def ms(seconds: float) -> int:
    """Whole milliseconds, at least one."""
    return max(1, int(seconds * 1000))


def redact(url: str) -> str:
    """How messages and logs name the Redis at ``url``: without its passwords."""
    return f"Redis at {redacted(url)}"
