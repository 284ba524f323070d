"""The Redis store on a ``sentinel://`` URL: every command goes to the primary the
sentinel names, before and after a failover."""

from __future__ import annotations

import redis

from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability
from tests.sentinel.servers import MASTER_NAME, SentinelTrio, client_of

REQUEST = StartRequest("t", "fp", 1, 30.0, "host:1")


def entry(index: int) -> str:
    return f'{{"k":"run","n":"s{index}","t":0,"d":0,"s":"ok","v":{index}}}'


def test_every_journal_write_goes_to_the_primary_the_sentinel_names(
    trio: SentinelTrio, key_prefix: str, redis_client: redis.Redis
) -> None:
    """The hot path (start, append, finish) goes through a connection the store holds
    (``stores/redis/lean.py``): it must find the primary through the sentinel as the
    rest of the store does, when it first connects and when it connects again."""
    keys = KeySpace(key_prefix)
    k = keys.invocation("inv")
    store = RedisJournalStore.from_url(trio.url, keys, {"master_name": MASTER_NAME})
    started = store.start("inv", REQUEST)
    assert store.append("inv", started.fence, 0, entry(0), False) is None

    # Not a Redis that merely happens to listen at redis-py's default address (the
    # suite's own Redis is there: a journal written to it would look fine to a reader).
    assert redis_client.exists(k.meta, k.journal) == 0, (
        "the journal went to the Redis at localhost:6379, not to the sentinel's primary"
    )
    with client_of(trio.primary) as primary:
        assert primary.llen(k.journal) == 1
        assert primary.hget(k.meta, "fence") == str(started.fence)

    trio.wait_caught_up()
    trio.primary.kill()
    trio.wait_failover_to(trio.replica)
    # The held connection is dead: the next write connects again, through the sentinel.
    assert store.append("inv", started.fence, 1, entry(1), False) is None
    with client_of(trio.replica) as new_primary:
        assert new_primary.llen(k.journal) == 2
    assert redis_client.exists(k.meta, k.journal) == 0
    assert store.read("inv") is not None
    store.client.close()


def test_a_write_waits_for_the_replica_of_the_primary_the_sentinel_names(
    trio: SentinelTrio, key_prefix: str
) -> None:
    """``durable_wait_replicas = 1`` on a Sentinel primary: WAIT goes with the write, to
    the primary that has the replica (anywhere else no replica would answer)."""
    keys = KeySpace(key_prefix)
    store = RedisJournalStore.from_url(
        trio.url, keys, {"master_name": MASTER_NAME}, Durability(replicas=1, timeout=5)
    )
    started = store.start("inv", REQUEST)
    assert store.append("inv", started.fence, 0, entry(0), False) is None
    with client_of(trio.replica) as replica:  # no waiting: WAIT said the replica has it
        assert replica.llen(keys.invocation("inv").journal) == 1
    store.client.close()
