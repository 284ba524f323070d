"""The Redis store's part for operators: reading, listing, forgetting, resuming, forking.

On one Redis an index is one sorted set per status; on a cluster one per slot in use,
which a listing reads in one pipeline per node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.client import NEVER_DECODE

from celery_durable.journal.store import (
    SUMMARY_FIELDS,
    TOMBSTONE_TTL,
    Fork,
    Position,
    Resumption,
    Stored,
    Summary,
    now,
)
from celery_durable.keys import LIVE_STATUSES, IndexKeys, MetaField
from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.base import RedisBase, ms
from celery_durable.stores.redis.checks import check_eviction_policy, check_replicas
from celery_durable.stores.redis.lean import bulk
from celery_durable.stores.redis.packing import unpack_stored


class Operators(RedisBase):
    """What people and the CLI do with journals (``JournalStore``)."""

    def forget(self, task_id: str) -> bool:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "forget"):
            reply = self._eval(
                scripts.FORGET, 11, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                self._keys.wakeups_of(task_id), k.tombstone, k.call, k.steps,
                task_id, ms(TOMBSTONE_TTL),
            )  # fmt: skip
        return bool(reply)

    def read(self, task_id: str) -> Stored | None:
        return self.read_many([task_id])[0]

    def read_many(self, task_ids: Sequence[str]) -> list[Stored | None]:
        pipe = self._client.pipeline(transaction=False)
        for task_id in task_ids:
            k = self._keys.invocation(task_id)
            pipe.hgetall(k.meta)
            pipe.lrange(k.journal, 0, -1)
            pipe.hgetall(k.done)
            pipe.get(k.call)
            pipe.execute_command("GET", k.steps, **{NEVER_DECODE: []})  # bytes, not text
        with self._errors(",".join(task_ids[:3]), "read"):
            replies = pipe.execute()
        found: list[Stored | None] = []
        rows = zip(task_ids, *(replies[i::5] for i in range(5)), strict=True)
        for task_id, meta, entries, done, call, packed in rows:
            if MetaField.PACKED in meta:  # a completed invocation's steps, packed at finish
                if packed is None:  # expired with its steps (durable_journal_retention)
                    entries = []
                else:
                    seed, call, entries = unpack_stored(packed, task_id, self._where)
                    call = call or None
                    if seed:
                        meta[MetaField.SEED] = seed
                del meta[MetaField.PACKED]
            if call is not None:  # handed back with the meta fields (MetaField.CALL)
                meta[MetaField.CALL] = call
            found.append((meta, entries, done) if meta else None)
        return found

    def _index_sets(self, status: str | None) -> list[str]:
        """The index keys that list ``status`` (all statuses for None or a finished one):
        one set per status on one Redis, one per slot in use on a cluster."""
        slots: list[IndexKeys]
        if self._keys.cluster:
            members = self._command("SMEMBERS", self._keys.slots_in_use)
            slots = [self._keys.indexes_of_slot(int(slot)) for slot in members]
        else:
            slots = [self._keys.indexes()]
        if status in IndexKeys._fields:
            return [getattr(ix, str(status)) for ix in slots]
        return [key for ix in slots for key in ix]

    def list_ids(self, status: str | None, limit: int, offset: int = 0) -> list[str]:
        end = offset + limit - 1
        with self._errors("*", "list"):
            pipe = self._client.pipeline(transaction=False)
            for key in self._index_sets(status):
                pipe.zrevrange(key, 0, end, withscores=True)
            replies = pipe.execute()
        # An invocation is in `all` and in its live status's set; newest first, once each.
        newest = sorted({m: s for reply in replies for m, s in reply}.items(), key=_by_score)
        return self._existing([member for member, _ in newest[offset : offset + limit]])

    def list_page(
        self,
        status: str | None,
        limit: int,
        after: Position | None = None,
        created_from: float | None = None,
        created_before: float | None = None,
    ) -> list[Position]:
        # A finished status has no index of its own: it is among all invocations.
        sets = self._index_sets(status if status in LIVE_STATUSES or status is None else "all")
        low = "-inf" if created_from is None else repr(float(created_from))
        high = "+inf" if created_before is None else f"({float(created_before)!r}"
        ties: str | None = None
        if after is not None and (created_before is None or after[1] < created_before):
            high, ties = f"({after[1]!r}", repr(after[1])
            if created_from is not None and after[1] < created_from:
                return []
        with self._errors("*", "list"):
            pipe = self._client.pipeline(transaction=False)
            for key in sets:
                pipe.zrevrangebyscore(key, high, low, start=0, num=limit, withscores=True)
                if ties is not None:  # those created at the same time, listed after it
                    pipe.zrangebyscore(key, ties, ties, withscores=True)
            replies = pipe.execute()
        found: dict[str, float] = {}
        for reply in replies:
            found.update(reply)
        if after is not None:
            found = {m: s for m, s in found.items() if (s, m) < (after[1], after[0])}
        # Newest first, ties by id descending: as ZREVRANGEBYSCORE orders them.
        newest = sorted(found.items(), key=_by_time_and_id, reverse=True)[:limit]
        kept = set(self._existing([member for member, _ in newest]))
        return [(member, score) for member, score in newest if member in kept]

    def summaries(self, task_ids: Sequence[str]) -> list[Summary | None]:
        if not task_ids:
            return []
        with self._errors(",".join(task_ids[:3]), "read"):
            if self._lean is not None:
                # Packed by hand: a listing reads hundreds of these at once, and redis-py
                # would spend more time encoding the same field names than Redis answering.
                keys = [self._keys.invocation(task_id) for task_id in task_ids]
                packed = b"".join(_summary_commands(k.meta, k.journal) for k in keys)
                replies = self._lean.call_many(packed, 2 * len(task_ids))
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
            else:
                pipe = self._client.pipeline(transaction=False)
                for task_id in task_ids:
                    k = self._keys.invocation(task_id)
                    pipe.hmget(k.meta, _READ_FIELDS)
                    pipe.llen(k.journal)
                replies = pipe.execute()
        found: list[Summary | None] = []
        now_ms = time.time() * 1000
        for fields, length in zip(replies[::2], replies[1::2], strict=True):
            meta = {f: v for f, v in zip(_READ_FIELDS, fields, strict=True) if v is not None}
            packed = meta.pop(MetaField.PACKED, None)  # its journal is in its packed steps
            until = meta.pop(MetaField.STEPS_UNTIL, None)
            if packed is not None and (until is None or float(until) > now_ms):
                length = packed  # (by this host's clock: the count is for people)
            found.append((meta, int(length)) if meta else None)
        return found

    def count_live(self) -> dict[str, int]:
        counts = dict.fromkeys(LIVE_STATUSES, 0)
        with self._errors("*", "count"):
            keys = {status: self._index_sets(status) for status in LIVE_STATUSES}
            pipe = self._client.pipeline(transaction=False)
            for status in LIVE_STATUSES:
                for key in keys[status]:
                    pipe.zcard(key)
            replies = iter(pipe.execute())
        for status in LIVE_STATUSES:
            counts[status] = sum(int(next(replies)) for _ in keys[status])
        return counts

    def _existing(self, task_ids: list[str]) -> list[str]:
        """``task_ids`` without those that expired, which leave the index (cluster only).

        On one Redis every finish trims the one index by retention. On a cluster a
        finish trims its own slot's index only, and a quiet slot's expired ids would
        stay listed, so they are dropped here as they are found.
        """
        if not self._keys.cluster or not task_ids:
            return task_ids
        with self._errors("*", "list"):
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.exists(self._keys.invocation(task_id).meta)
            exists = pipe.execute()
        gone = [task_id for task_id, found in zip(task_ids, exists, strict=True) if not found]
        self.forget_index(gone)
        return [task_id for task_id in task_ids if task_id not in gone]

    def forget_index(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                for key in self._keys.indexes(task_id):
                    pipe.zrem(key, task_id)
            with self._errors("*", "clean the index of"):
                pipe.execute()

    def check_eviction_policy(self, mode: str) -> str | None:
        """Refuse or describe a ``maxmemory-policy`` that could evict journals."""
        return check_eviction_policy(self._client, self._where, mode)

    def check_replicas(self, wanted: int) -> str | None:
        """Refuse ``durable_wait_replicas`` that too few connected replicas could meet."""
        return check_replicas(self._client, self._where, wanted, self._keys.cluster)

    # -- Resume, fork, purge ------------------------------------------------------------

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        flag = "1" if require_call else "0"
        with self._errors(task_id, "resume"):
            reply: list[Any] = self._eval(
                scripts.RESUME, 6, k.meta, k.journal, k.done, ix.all, ix.paused, k.call,
                task_id, now(), reason, flag,
            )  # fmt: skip
        if reply[0] == "resumed":
            return Resumption("resumed", reply[1], reply[2], reply[3] or None, int(reply[4]))
        if reply[0] == "gone":
            return Resumption("gone")
        if reply[0] in ("no-call", "dropped"):
            return Resumption("no-call" if reply[0] == "no-call" else "dropped", reply[1])
        return Resumption("refused", reply[1])

    def fork(self, task_id: str, fork: Fork) -> bool:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        pairs = [part for item in sorted(fork.completions.items()) for part in item]
        with self._errors(task_id, "create the fork"):
            created = self._eval(
                scripts.FORK, 7, k.meta, k.journal, k.done, ix.all, ix.paused, k.tombstone,
                k.call, task_id, fork.task_name, fork.fingerprint, str(fork.seed), now(), fork.call,
                fork.reason, len(fork.entries), *fork.entries, *pairs,
            )  # fmt: skip
        if created:
            self._note_slot(task_id)
        return bool(created)

    def forget_if(self, task_id: str, status: str, created_before: float) -> int:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "purge"):
            reply = self._eval(
                scripts.FORGET_IF, 11, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                self._keys.wakeups_of(task_id), k.tombstone, k.call, k.steps, task_id, status,
                f"{created_before:.6f}", ms(TOMBSTONE_TTL),
            )  # fmt: skip
        return int(reply)

    def list_ids_before(
        self, status: str | None, before: float, limit: int, offset: int = 0
    ) -> list[str]:
        sets = self._index_sets(status if status in IndexKeys._fields else "all")
        with self._errors("*", "list"):
            pipe = self._client.pipeline(transaction=False)
            for key in sets:
                pipe.zrangebyscore(key, "-inf", f"({before:.6f}", 0, offset + limit, True)
            replies = pipe.execute()
        oldest = sorted({m: s for reply in replies for m, s in reply}.items(), key=_by_age)
        return self._existing([member for member, _ in oldest[offset : offset + limit]])


def _by_score(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


#: What a listing reads of the meta hash: ``SUMMARY_FIELDS``, and how many entries packed
#: steps hold (``MetaField.PACKED``) until they expire (``MetaField.STEPS_UNTIL``).
_READ_FIELDS = (*SUMMARY_FIELDS, MetaField.PACKED, MetaField.STEPS_UNTIL)
_HMGET_SUMMARY = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(_READ_FIELDS))
_SUMMARY_FIELDS = b"".join(bulk(field.encode()) for field in _READ_FIELDS)
_LLEN = b"*2\r\n$4\r\nLLEN\r\n"


def _summary_commands(meta: str, journal: str) -> bytes:
    """``HMGET <meta> <SUMMARY_FIELDS>`` and ``LLEN <journal>``, packed."""
    return b"".join(
        (_HMGET_SUMMARY, bulk(meta.encode()), _SUMMARY_FIELDS, _LLEN, bulk(journal.encode()))
    )


def _by_time_and_id(item: tuple[str, float]) -> tuple[float, str]:
    return (item[1], item[0])


def _by_age(item: tuple[str, float]) -> tuple[float, str]:
    return (item[1], item[0])
