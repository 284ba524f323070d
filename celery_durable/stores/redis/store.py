"""The Redis journal store: one Lua script per operation, one round trip each.

Only ``stores/redis`` imports ``redis``. Every state change is one script that checks
the invocation exists, its status, and the writer's fencing token (``lua/``); on a
Redis Cluster every script touches one hash slot. This module is an execution's path
(start, steps, finish); ``waiting`` and ``operators`` are the store's other parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.client import NEVER_DECODE

from celery_durable.errors import JournalError
from celery_durable.journal.store import Cancelling, Reopening, Started, StartRequest, now
from celery_durable.keys import KeySpace, MetaField
from celery_durable.stores.redis import packing, scripts
from celery_durable.stores.redis.base import ms, redact
from celery_durable.stores.redis.connect import client_for
from celery_durable.stores.redis.durability import Durability
from celery_durable.stores.redis.errors import REDIS_ERRORS
from celery_durable.stores.redis.flow_control import FlowControl, cancelling
from celery_durable.stores.redis.lean import bulk, transaction, transaction_replies
from celery_durable.stores.redis.operators import Operators
from celery_durable.stores.redis.recovery import Recovery
from celery_durable.stores.redis.waiting import Waiting


class RedisJournalStore(Waiting, Operators, Recovery, FlowControl):
    """Keeps journals in Redis (one server, a Sentinel-managed primary, or a cluster)."""

    _append_head: tuple[str, int, bytes] = ("", 0, b"")

    @classmethod
    def from_url(
        cls,
        url: str,
        keys: KeySpace,
        options: Mapping[str, Any] | None = None,
        durability: Durability | None = None,
    ) -> RedisJournalStore:
        """Return a store on a new client of ``url``: one Redis, Sentinel, or a cluster
        (when ``keys`` are a cluster's)."""
        client = client_for(url, keys.cluster, options or {})
        return cls(client, keys, redact(url), durability)

    # -- An execution -------------------------------------------------------------------

    def start(self, task_id: str, request: StartRequest) -> Started:
        if not self._epoch_marked:
            self._mark_epoch()
        k = self._keys.invocation(task_id)
        args = (
            k.meta, k.journal, k.done, *self._keys.indexes(task_id), self._keys.wakeups_of(task_id),
            k.tombstone, self._keys.deadlines_of(task_id), k.call,
            task_id, request.task_name, request.fingerprint, str(request.seed),
            now(), ms(request.lease_ttl), request.holder, request.nesting, request.call,
            request.ended_fence, int(request.timeout * 1000), request.concurrency,
        )  # fmt: skip

        # MULTI makes the journal read exactly the one the script saw. A durability
        # level waits after EXEC, on the same connection: the entries handed back must
        # be as durable as a step's write before the body sees them.
        commands = (
            ("EVALSHA", scripts.START.sha, 11, *args),
            ("LRANGE", k.journal, 0, -1),
            ("HGETALL", k.done),
        )
        waits = self._durability.commands()

        def call() -> tuple[list[Any], list[Any]]:
            if self._lean is not None:
                return self._lean.transaction(*commands, after=waits)
            if waits:  # a cluster: one connection of the key's node for all of it
                replies = self._together(k.meta, transaction(commands, waits))
                return transaction_replies(replies, len(commands))
            pipe = self._client.pipeline(transaction=True)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute(), []

        with self._errors(task_id, "start"):
            (reply, entries, completions), acks = self._loading_scripts(call)
            if waits:
                try:
                    self._durability.check(acks, self._where, f"start invocation {task_id}")
                except BaseException:
                    # Whatever the wait says (not in time, refused, not configured), the
                    # lease is this start's: the next delivery must not wait it out.
                    if reply[0] == "run":
                        with contextlib.suppress(JournalError):
                            self.release(task_id, int(reply[1]))
                    raise
        if isinstance(completions, list):  # RESP2 gives a hash as a flat list
            completions = dict(zip(completions[::2], completions[1::2], strict=True))
        state = reply[0]
        if state == "run":
            # Cluster only, and once per slot and process: not only at creation, since
            # a creation whose note failed is retried as a start of an existing one.
            with self._errors(task_id, "list"):
                self._note_slot(task_id)
            if reply[2] != "running":  # woken: its wake-up copy is not needed any more
                with self._errors(task_id, "start"):
                    self._drop_wakeup_copy(task_id)
            _, fence, status, seed, length, deaths, attempt, guard, created, cancel = reply
            if created and request.timeout:
                with self._errors(task_id, "note the deadline of"):
                    self._copy_deadline(task_id, request.timeout)
            return Started(
                "run",
                created=bool(created),
                status=status,
                fence=int(fence),
                seed=int(seed),
                entries=entries[: int(length)],
                deaths=int(deaths),
                attempt=attempt,
                guard=None if guard is None else int(guard),
                completions=completions,
                cancel=cancel,
            )
        if state == "done":
            return Started("done", status=reply[1], outcome=reply[2] or None)
        if state == "busy":
            return Started("busy", busy_for=int(reply[1]) / 1000, holder=reply[2])
        if state == "paused":
            return Started("paused", status="paused")
        _, name, fingerprint, status = reply
        return Started("conflict", status=status, task_name=name, fingerprint=fingerprint)

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | Cancelling | None:
        # The hot path: one EVALSHA, and nothing else that can be avoided.
        flag = "1" if ends_attempts else "0"
        try:
            if self._lean is None:
                k = self._keys.invocation(task_id)
                reply: Any = self._write(
                    scripts.APPEND, 2, k.meta, k.journal, fence, index, entry, flag
                )
                return cancelling(reply)
            # Packed by hand: what is the same for every step of an execution once.
            cached_id, cached_fence, head = self._append_head
            if (cached_id, cached_fence) != (task_id, fence):
                head = self._pack_append_head(task_id, fence)
                self._append_head = (task_id, fence, head)
            tail = b"$1\r\n1\r\n" if ends_attempts else b"$1\r\n0\r\n"
            packed = b"".join((head, bulk(b"%d" % index), bulk(entry.encode()), tail))
            k = self._keys.invocation(task_id)
            reply = self._send_write(
                packed, scripts.APPEND, 2, k.meta, k.journal, fence, index, entry, flag
            )
            return cancelling(reply)
        except REDIS_ERRORS as exc:
            raise self._error(exc, task_id, f"write step {index} of") from exc

    def _pack_append_head(self, task_id: str, fence: int) -> bytes:
        k = self._keys.invocation(task_id)
        parts = (b"EVALSHA", scripts.APPEND.sha.encode(), b"2", k.meta.encode(),
                 k.journal.encode(), b"%d" % fence)  # fmt: skip
        return b"*9\r\n" + b"".join(bulk(part) for part in parts)

    def record_attempt(
        self,
        task_id: str,
        fence: int,
        index: int,
        attempt: str,
        release: bool = True,
        retry_in: float = 0.0,
        cancellable: bool = True,
    ) -> str | Cancelling | None:
        k = self._keys.invocation(task_id)
        flag = "1" if release else "0"
        due_in = max(0, int(retry_in * 1000))
        with self._errors(task_id, f"record a failed attempt of step {index} of"):
            reply: Any = self._write(
                scripts.ATTEMPT, 2, k.meta, k.journal, fence, index, attempt, now(), flag, due_in,
                "1" if cancellable else "0",
            )  # fmt: skip
        return cancelling(reply)

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"guard at-most-once step {index} of"):
            reply: str | None = self._write(scripts.GUARD, 2, k.meta, k.journal, fence, index)
        return reply

    def release(
        self,
        task_id: str,
        fence: int,
        fingerprint: str = "",
        retry_in: float = 0.0,
        call: str = "",
        reopen: Reopening | None = None,
        cancellable: bool = True,
    ) -> bool | Cancelling:
        k = self._keys.invocation(task_id)
        due_in = max(0, int(retry_in * 1000))
        args = (k.meta, k.journal, k.call, fence, fingerprint, now(), due_in, call)
        news = "1" if cancellable else "0"
        with self._errors(task_id, "release"):
            if reopen is None:
                reply = self._eval(scripts.RELEASE, 3, *args, -1, "", "", news)
            else:  # it writes the journal: as durable as any journal write
                reply = self._write(
                    scripts.RELEASE, 3, *args, reopen.start, reopen.last, reopen.attempt, news
                )
        return Cancelling(reply[1]) if isinstance(reply, list) else bool(reply)

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool | Cancelling]:
        if not leases:
            return []
        ttl_ms = ms(ttl)

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            command: Callable[..., Any] = pipe.execute_command
            for task_id, fence in leases:
                meta = self._keys.invocation(task_id).meta
                command("EVALSHA", scripts.RENEW.sha, 1, meta, fence, ttl_ms)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(leases[0][0], "renew the lease of"):
            replies = self._loading_scripts(call)
        # A text reply is the reason of a cancel: renewed, and cancelled.
        return [Cancelling(r) if isinstance(r, str) else bool(r) for r in replies]

    def break_lease(self, task_id: str, holder: str) -> bool:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "expire the dead holder's lease of"):
            return bool(self._eval(scripts.BREAK_LEASE, 1, k.meta, holder))

    def finish(
        self,
        task_id: str,
        fence: int | None,
        status: str,
        outcome: str,
        retention: float,
        nesting: int = 0,
        call: str = "",
        journal_retention: float | None = None,
        entries: Sequence[str] | None = None,
        held_call: str = "",
    ) -> tuple[str, str] | None:
        k = self._keys.invocation(task_id)
        token = "" if fence is None else fence
        # 0 drops the steps now (ms() makes any other value at least 1 ms).
        steps_ms = ms(retention if journal_retention is None else journal_retention)
        steps_ms = 0 if journal_retention is not None and journal_retention <= 0 else steps_ms
        packed: packing.Compressed | None = None
        if entries is not None and status == "completed" and steps_ms > 0:
            packed = packing.compress(entries, held_call)
        pack_args = ("", 0, "", "") if packed is None else (
            packed.entries, len(entries or ()), packed.with_call, packed.call_digest
        )  # fmt: skip
        with self._errors(task_id, "finish"):
            reply = self._hot_eval(
                scripts.FINISH, 10, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                self._keys.wakeups_of(task_id), k.call, k.steps,
                task_id, token, status, outcome, now(), ms(retention), nesting, call, steps_ms,
                *pack_args,
            )  # fmt: skip
        return None if reply is None else (reply[0], reply[1])

    def pause(
        self, task_id: str, fence: int, reason: str, call: str = "", attempt: str = ""
    ) -> str:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        with self._errors(task_id, "pause"):
            status: str = self._write(
                scripts.PAUSE, 4, k.meta, ix.running, ix.paused, k.call,
                task_id, fence, reason, now(), call, attempt,
            )  # fmt: skip
        return status

    def pause_finished(self, task_id: str, status: str, outcome: str, reason: str) -> str:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        with self._errors(task_id, "pause"):
            # A completed invocation's steps may be packed: a resume reads them as a list.
            pipe = self._client.pipeline(transaction=False)
            pipe.hget(k.meta, MetaField.PACKED)
            pipe.execute_command("GET", k.steps, **{NEVER_DECODE: []})
            count, pack = pipe.execute()
        unpacked: tuple[str, ...] = ("", "", "")
        if count is not None and pack is not None:
            seed, call, entries = packing.unpack_stored(pack, task_id, self._where)
            unpacked = (packing.digest(pack), seed, call, *entries)
        with self._errors(task_id, "pause"):
            now_status: str = self._write(
                scripts.PAUSE_FINISHED, 7, k.meta, k.journal, k.done, ix.all, ix.paused, k.call,
                k.steps, task_id, status, outcome, reason, now(), *unpacked,
            )  # fmt: skip
        return now_status
