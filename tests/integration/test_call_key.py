"""The stored call in a key of its own, and invocations that an earlier release left with
the call in their meta hash: every reader still finds it there (recovery, a wake-up, a
cancel, a resume, ``read``), and a finish that drops the steps drops it too."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.keys import MetaField as F
from celery_durable.stores.redis import RedisJournalStore

CALL = '{"task":"shop.checkout","args":["o-1"],"kwargs":{},"options":{"task_id":"inv"}}'
OK = '{"k":"run","n":"s0","t":0,"d":0,"s":"ok","v":0}'


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisJournalStore]:
    store = RedisJournalStore.from_url(redis_url, KeySpace(key_prefix))
    yield store
    store.close()


def start(store: RedisJournalStore, ttl: float = 30.0) -> int:
    started = store.start("inv", StartRequest("shop.checkout", "fp", 11, ttl, "host:1", call=CALL))
    assert started.state == "run"
    return started.fence


def as_an_earlier_release_kept_it(client: redis.Redis, keys: KeySpace) -> None:
    """Move the call into the meta hash, where releases before issue 21 kept it."""
    k = keys.invocation("inv")
    assert client.get(k.call) == CALL
    client.hset(k.meta, "call", CALL)
    client.delete(k.call)


def test_the_call_has_a_key_of_its_own_and_the_meta_hash_stays_a_listpack(
    store: RedisJournalStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    k = KeySpace(key_prefix).invocation("inv")
    fence = start(store)
    store.append("inv", fence, 0, OK, False)
    store.finish("inv", fence, "completed", '{"s":"ok","v":1}', 60)
    assert redis_client.get(k.call) == CALL
    assert "call" not in redis_client.hgetall(k.meta)
    assert redis_client.object("encoding", k.meta) == "listpack"
    found = store.read("inv")
    assert found is not None and found[0][F.CALL] == CALL


def test_a_call_an_earlier_release_kept_in_meta_is_found_by_every_reader(
    store: RedisJournalStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    keys = KeySpace(key_prefix)
    start(store, ttl=0.05)  # a lease that runs out: a lost invocation to recover
    as_an_earlier_release_kept_it(redis_client, keys)
    time.sleep(0.1)

    found = store.read("inv")
    assert found is not None and found[0][F.CALL] == CALL
    assert store.recover(["inv"], 0.01) == [CALL]
    assert store.cancel("inv", "the customer left").call == CALL  # no live lease holds it
    assert store.wake_state("inv") == ("running", CALL)
    fence = start(store)  # it runs its cancel; it pauses instead, to be resumed
    assert store.pause("inv", fence, "stopped by the test") == "paused"
    assert store.resume("inv", "resumed").call == CALL


def test_dropping_the_steps_drops_a_call_kept_in_meta(
    store: RedisJournalStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    keys = KeySpace(key_prefix)
    fence = start(store)
    as_an_earlier_release_kept_it(redis_client, keys)
    store.finish("inv", fence, "completed", '{"s":"ok","v":1}', 60, journal_retention=0)
    meta = redis_client.hgetall(keys.invocation("inv").meta)
    assert "call" not in meta and meta["outcome"] == '{"s":"ok","v":1}'
