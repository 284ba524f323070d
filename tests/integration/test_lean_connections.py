"""The journal's held connections (``stores/redis/lean.py``): one per live thread, not one
per thread that ever lived. ``run_async`` steps run in threads that each execution starts
anew, so a worker makes thousands of them; a connection counted against the pool's
``max_connections`` for every one would exhaust it (redis-py 8's default is 100)."""

from __future__ import annotations

import threading

import redis

from celery_durable.stores.redis.lean import LeanConnection

LIMIT = 4


def ping_in_a_new_thread(lean: LeanConnection, replies: list[object]) -> None:
    thread = threading.Thread(target=lambda: replies.append(lean.call(b"*1\r\n$4\r\nPING\r\n")))
    thread.start()
    thread.join()


def test_threads_that_come_and_go_reuse_the_connections_of_those_that_ended(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=LIMIT)
    lean = LeanConnection(client)
    replies: list[object] = []
    try:
        for _ in range(10 * LIMIT):
            ping_in_a_new_thread(lean, replies)
        assert replies == [b"PONG"] * (10 * LIMIT)
        assert client.connection_pool._created_connections <= 2
    finally:
        lean.close()
        client.close()


def test_threads_alive_together_each_hold_their_own(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=LIMIT)
    lean = LeanConnection(client)
    held: list[object] = []
    gate = threading.Barrier(LIMIT)

    def hold() -> None:
        held.append(lean.connection())
        gate.wait(5)  # all alive at once

    try:
        threads = [threading.Thread(target=hold) for _ in range(LIMIT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(conn) for conn in held}) == LIMIT
    finally:
        lean.close()
        client.close()
