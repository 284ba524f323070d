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
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


class LeanConnection:
    """A connection of the store's pool held by each thread that uses it."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        # Outside the pool's checkout, so the pool does not close them: close() does.
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()

    def connection(self) -> Any:
        # Any: redis-py leaves the connection's methods untyped.
        conn: Any = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # new thread, or a forked child
            conn = self._local.conn = self._pool.make_connection()
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
                conn.send_packed_command([packed], False)
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(conn.read_response())
                    except ResponseError as error:
                        replies.append(error)
                return replies
            except RedisConnectionError:
                conn.disconnect()
                if last:
                    raise
            except (RedisTimeoutError, OSError):
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def transaction(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Run ``commands`` in MULTI/EXEC in one round trip; return EXEC's replies.

        An error reply inside EXEC is raised (the first one), as redis-py's pipeline does.
        """
        packed = self.connection().pack_commands([("MULTI",), *commands, ("EXEC",)])
        for last in (False, True):
            conn = self.connection()
            try:
                conn.send_packed_command(packed, False)
                for _ in range(len(commands) + 1):  # +OK, then +QUEUED per command
                    conn.read_response()
                replies: list[Any] = conn.read_response()
                break
            except RedisConnectionError:
                conn.disconnect()
                if last:
                    raise
            except (RedisTimeoutError, OSError, ResponseError):
                # A command refused while queueing (an error before EXEC): the replies
                # that follow are discarded with the connection.
                conn.disconnect()
                raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def close(self) -> None:
        """Disconnect every thread's connection; a thread's next command connects again."""
        for conn in list(self._made):
            if conn.pid == os.getpid():  # a forked parent's socket is the parent's to close
                conn.disconnect()
