"""The lean path of the journal's hot commands: one held connection, pre-packed commands.

A step costs one round trip; through redis-py's client it also costs a pool checkout
and release, a PID check, a readability probe, a retry wrapper and the packing of
every argument, which together took as much CPU as the I/O itself (see
bench/README.md). This path holds one connection per thread (``make_connection``,
outside the pool's checkout), sends commands packed once per execution where their
arguments allow, and reads the reply with the connection's own parser. redis-py
still does the rest: connecting (TLS, RESP3 handshake, Sentinel discovery through the
pool), parsing, and errors. A connection that fails is disconnected, and the error
goes up as before, so an outage still ends in the retry-until-Redis-is-back path; the
next command connects again.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def transaction(
    commands: Sequence[tuple[Any, ...]], after: Sequence[tuple[Any, ...]] = ()
) -> list[tuple[Any, ...]]:
    """``commands`` in MULTI/EXEC, followed by ``after``."""
    return [("MULTI",), *commands, ("EXEC",), *after]


def transaction_replies(replies: list[Any], queued: int) -> tuple[list[Any], list[Any]]:
    """Split the replies of ``transaction``: EXEC's, and those of what followed it.

    Raises:
        ResponseError: the first error reply of the transaction: one that refused a
            command while queueing it (EXEC then aborts), or one EXEC returned.
    """
    exec_replies = replies[queued + 1]
    for reply in (
        *replies[: queued + 1],
        *(exec_replies if isinstance(exec_replies, list) else ()),
    ):
        if isinstance(reply, ResponseError):
            raise reply
    if isinstance(exec_replies, ResponseError):
        raise exec_replies
    return exec_replies, replies[queued + 2 :]


def exchange(conn: Any, packed: bytes, count: int) -> list[Any]:
    """Send commands packed together on ``conn``; read their ``count`` replies, error
    replies as exception objects, so that none is left unread on the connection."""
    conn.send_packed_command([packed], False)
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def _is_connected(conn: Any) -> bool:
    """Whether ``conn`` has its socket: ``is_connected`` from redis-py 8 on (its caching
    proxy too), the socket itself before."""
    connected = getattr(conn, "is_connected", None)
    return bool(conn._sock is not None if connected is None else connected)


class _Held:
    """A thread's connection. Python drops it when the thread ends, and a finalizer then
    hands the connection on to the next new thread."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class LeanConnection:
    """A connection of the store's pool held by each thread that uses it.

    A connection made outside the pool's checkout counts against its ``max_connections``
    for good (redis-py 8's default is 100), and ``run_async`` steps run in threads that
    each execution starts anew: a thread that ends hands its connection to the next new
    one, so the connections made are as many as the threads alive at once.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        # Outside the pool's checkout, so the pool does not close them: close() does.
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()
        self._idle: list[Any] = []
        """Connections of threads that ended, for new threads to take."""

    def connection(self) -> Any:
        # Any: redis-py leaves the connection's methods untyped.
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.conn.pid != os.getpid():  # new thread, or a forked child
            held = self._local.held = _Held(self._take())
            weakref.finalize(held, self._idle.append, held.conn)
        conn = held.conn
        if not _is_connected(conn):
            # Before a send would: send_packed_command connects without connect(), where
            # a Sentinel-managed connection asks the sentinels for the primary.
            conn.connect()
        return conn

    def _take(self) -> Any:
        """An idle connection of this process, or a new one."""
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another new thread took the last one
                break
            if conn.pid == os.getpid():  # a forked parent's is the parent's
                return conn
        conn = self._pool.make_connection()
        self._made.add(conn)
        return conn

    def call(self, packed: bytes | list[bytes]) -> Any:
        """Send one packed command and return its reply; raise its error reply.

        A connection the server closed (a restart, an idle timeout) is reopened and the
        command sent once more, as redis-py's client does; every hot command is safe to
        repeat (a repeated append or finish finds its own write, first writer wins).
        """
        chunks = [packed] if isinstance(packed, bytes) else packed
        for last in (False, True):
            conn = self.connection()
            try:
                conn.send_packed_command(chunks, False)
                return conn.read_response()
            except RedisConnectionError:
                conn.disconnect()
                if last:
                    raise
            except (RedisTimeoutError, OSError):
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def call_many(self, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands at once; return their replies, errors included
        (as exception objects), so that one error reply leaves none of them unread."""
        for last in (False, True):
            conn = self.connection()
            try:
                return exchange(conn, packed, count)
            except RedisConnectionError:
                conn.disconnect()
                if last:
                    raise
            except (RedisTimeoutError, OSError):
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def transaction(
        self, *commands: tuple[Any, ...], after: Sequence[tuple[Any, ...]] = ()
    ) -> tuple[list[Any], list[Any]]:
        """Run ``commands`` in MULTI/EXEC, then ``after``, in one round trip.

        Returns:
            EXEC's replies, and those of ``after`` (errors as exception objects).

        Raises:
            ResponseError: the first error reply of the transaction, as redis-py's
                pipeline does.
        """
        packed = b"".join(self.connection().pack_commands(transaction(commands, after)))
        replies = self.call_many(packed, len(commands) + 2 + len(after))
        return transaction_replies(replies, len(commands))

    def close(self) -> None:
        """Disconnect every thread's connection; a thread's next command connects again."""
        for conn in list(self._made):
            if conn.pid == os.getpid():  # a forked parent's socket is the parent's to close
                conn.disconnect()
