"""The Redis journal store: one Lua script per operation, one round trip each.

Only ``stores/redis`` imports ``redis``. Every state change is one script that checks
the invocation exists, its status, and the writer's fencing token (``lua/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError, RedisError

from celery_durable.journal.store import Fork, Resumption, Started, StartRequest, Stored
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.checks import check_eviction_policy
from celery_durable.stores.redis.errors import is_gone, journal_error
from celery_durable.stores.redis.lean import LeanConnection, bulk
from celery_durable.stores.redis.scripts import Script

T = TypeVar("T")


class RedisJournalStore:
    """Keeps journals in Redis under one key prefix."""

    def __init__(self, client: redis.Redis, keys: KeySpace, where: str = "Redis") -> None:
        self._client = client
        self._keys = keys
        self._where = where
        # Typed here once: redis-py leaves execute_command untyped.
        self._command: Callable[..., Any] = client.execute_command
        # The hot commands (start, append, finish) go through one held connection per
        # thread, packed by hand where they can be (lean.py); other clients (a cluster)
        # take redis-py's usual path.
        self._lean = LeanConnection(client) if type(client) is redis.Redis else None
        self._append_head: tuple[str, int, bytes] = ("", 0, b"")
        self._epoch_marked = False

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

    # -- An execution -------------------------------------------------------------------

    def start(self, task_id: str, request: StartRequest) -> Started:
        if not self._epoch_marked:
            self._mark_epoch()
        k = self._keys.invocation(task_id)
        args = (
            k.meta, k.journal, k.done, *self._keys.indexes(task_id),
            task_id, request.task_name, request.fingerprint, str(request.seed),
            _now(), _ms(request.lease_ttl), request.holder, request.nesting, request.call,
            request.ended_fence,
        )  # fmt: skip

        def call() -> list[Any]:
            # MULTI makes the journal read exactly the one the script saw.
            if self._lean is not None:
                return self._lean.transaction(
                    ("EVALSHA", scripts.START.sha, 7, *args),
                    ("LRANGE", k.journal, 0, -1),
                    ("HGETALL", k.done),
                )
            pipe = self._client.pipeline(transaction=True)
            command: Callable[..., Any] = pipe.execute_command
            command("EVALSHA", scripts.START.sha, 7, *args)
            command("LRANGE", k.journal, 0, -1)
            command("HGETALL", k.done)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(task_id, "start"):
            reply, entries, completions = self._loading_scripts(call)
        if isinstance(completions, list):  # RESP2 gives a hash as a flat list
            completions = dict(zip(completions[::2], completions[1::2], strict=True))
        state = reply[0]
        if state == "run":
            _, fence, status, seed, length, deaths, attempt, guard, created = reply
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
            )
        if state == "done":
            return Started("done", status=reply[1], outcome=reply[2] or None)
        if state == "busy":
            return Started("busy", busy_for=int(reply[1]) / 1000, holder=reply[2])
        _, name, fingerprint, status = reply
        return Started("conflict", status=status, task_name=name, fingerprint=fingerprint)

    def append(
        self, task_id: str, fence: int, index: int, entry: str, ends_attempts: bool
    ) -> str | None:
        # The hot path: one EVALSHA, and nothing else that can be avoided.
        flag = "1" if ends_attempts else "0"
        try:
            if self._lean is None:
                k = self._keys.invocation(task_id)
                reply: str | None = self._eval(
                    scripts.APPEND, 2, k.meta, k.journal, fence, index, entry, flag
                )
                return reply
            # Packed by hand: what is the same for every step of an execution once.
            cached_id, cached_fence, head = self._append_head
            if (cached_id, cached_fence) != (task_id, fence):
                head = self._pack_append_head(task_id, fence)
                self._append_head = (task_id, fence, head)
            tail = b"$1\r\n1\r\n" if ends_attempts else b"$1\r\n0\r\n"
            packed = b"".join((head, bulk(b"%d" % index), bulk(entry.encode()), tail))
            try:
                reply = self._lean.call(packed)
            except NoScriptError:
                k = self._keys.invocation(task_id)
                reply = self._eval(scripts.APPEND, 2, k.meta, k.journal, fence, index, entry, flag)
            return reply
        except RedisError as exc:
            raise self._error(exc, task_id, f"write step {index} of") from exc

    def _pack_append_head(self, task_id: str, fence: int) -> bytes:
        k = self._keys.invocation(task_id)
        parts = (b"EVALSHA", scripts.APPEND.sha.encode(), b"2", k.meta.encode(),
                 k.journal.encode(), b"%d" % fence)  # fmt: skip
        return b"*9\r\n" + b"".join(bulk(part) for part in parts)

    def record_attempt(
        self, task_id: str, fence: int, index: int, attempt: str, release: bool = True
    ) -> str | None:
        k = self._keys.invocation(task_id)
        flag = "1" if release else "0"
        with self._errors(task_id, f"record a failed attempt of step {index} of"):
            reply: str | None = self._eval(
                scripts.ATTEMPT, 2, k.meta, k.journal, fence, index, attempt, _now(), flag
            )
        return reply

    def guard(self, task_id: str, fence: int, index: int) -> str | None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"guard at-most-once step {index} of"):
            reply: str | None = self._eval(scripts.GUARD, 2, k.meta, k.journal, fence, index)
        return reply

    def release(self, task_id: str, fence: int, fingerprint: str = "", call: str = "") -> bool:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "release"):
            reply = self._eval(scripts.RELEASE, 1, k.meta, fence, fingerprint, call, _now())
        return bool(reply)

    def renew(self, leases: Sequence[tuple[str, int]], ttl: float) -> list[bool]:
        if not leases:
            return []
        ms = _ms(ttl)

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            command: Callable[..., Any] = pipe.execute_command
            for task_id, fence in leases:
                meta = self._keys.invocation(task_id).meta
                command("EVALSHA", scripts.RENEW.sha, 1, meta, fence, ms)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(leases[0][0], "renew the lease of"):
            replies = self._loading_scripts(call)
        return [bool(r) for r in replies]

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
    ) -> tuple[str, str] | None:
        k = self._keys.invocation(task_id)
        token = "" if fence is None else fence
        with self._errors(task_id, "finish"):
            reply = self._hot_eval(
                scripts.FINISH, 7, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                task_id, token, status, outcome, _now(), _ms(retention), nesting, call,
            )  # fmt: skip
        return None if reply is None else (reply[0], reply[1])

    def pause(
        self, task_id: str, fence: int, reason: str, call: str = "", attempt: str = ""
    ) -> str:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        with self._errors(task_id, "pause"):
            status: str = self._eval(
                scripts.PAUSE, 3, k.meta, ix.running, ix.paused,
                task_id, fence, reason, _now(), call, attempt,
            )  # fmt: skip
        return status

    # -- Waiting ------------------------------------------------------------------------

    def suspend(
        self,
        task_id: str,
        fence: int,
        awaiting: str,
        indexes: Sequence[int],
        wake_at: float,
        call: str,
    ) -> str:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        wake_ms = int(wake_at * 1000) if wake_at else 0
        with self._errors(task_id, "suspend"):
            state: str = self._eval(
                scripts.SUSPEND, 5, k.meta, k.done, ix.running, ix.suspended, self._keys.wakeups,
                task_id, fence, awaiting, ",".join(map(str, indexes)), wake_ms, call, _now(),
            )  # fmt: skip
        return state

    def complete(self, task_id: str, index: int, kind: str, proof: str, outcome: str) -> int:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"complete {kind} {index} of"):
            reply = self._eval(
                scripts.COMPLETE, 4, k.meta, k.journal, k.done, self._keys.wakeups,
                task_id, index, kind, proof, outcome,
            )  # fmt: skip
        return int(reply)

    def mark_sent(self, task_id: str, fence: int, index: int) -> None:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, f"note the child at {index} of"):
            self._eval(scripts.SENT, 2, k.meta, k.done, fence, index)

    def completions(self, task_id: str) -> dict[str, str]:
        with self._errors(task_id, "read the completions of"):
            found: dict[str, str] = self._command("HGETALL", self._keys.invocation(task_id).done)
        return found

    def claim_wakeups(self, limit: int, visibility: float) -> tuple[list[tuple[str, str]], float]:
        with self._errors("*", "claim the wake-ups of"):
            reply: list[str] = self._eval(
                scripts.CLAIM, 1, self._keys.wakeups, limit, _ms(visibility)
            )
        *pairs, next_ms = reply
        claimed = list(zip(pairs[::2], pairs[1::2], strict=True))
        return claimed, float(next_ms) / 1000 if float(next_ms) >= 0 else -1.0

    def wake_state(self, task_id: str) -> tuple[str, str] | None:
        meta = self._keys.invocation(task_id).meta
        with self._errors(task_id, "read the call of"):
            status, call = self._command("HMGET", meta, "status", "call")
        return None if status is None else (status, call or "")

    def ack_wakeup(self, task_id: str, claim: str) -> None:
        with self._errors(task_id, "acknowledge the wake-up of"):
            self._eval(scripts.ACK_WAKEUP, 1, self._keys.wakeups, task_id, claim)

    # -- Operators ----------------------------------------------------------------------

    def forget(self, task_id: str) -> bool:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "forget"):
            reply = self._eval(
                scripts.FORGET, 7, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                task_id,
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
        with self._errors(",".join(task_ids[:3]), "read"):
            replies = pipe.execute()
        found = zip(replies[::3], replies[1::3], replies[2::3], strict=True)
        return [(meta, entries, done) if meta else None for meta, entries, done in found]

    def list_ids(self, status: str | None, limit: int, offset: int = 0) -> list[str]:
        ix = self._keys.indexes()
        sets = [getattr(ix, status)] if status in ix._fields else list(ix)
        end = offset + limit - 1
        pipe = self._client.pipeline(transaction=False)
        for key in sets:
            pipe.zrevrange(key, 0, end, withscores=True)
        with self._errors("*", "list"):
            replies = pipe.execute()
        # An invocation is in `all` and in its live status's set; newest first, once each.
        newest = sorted({m: s for reply in replies for m, s in reply}.items(), key=_by_score)
        return [member for member, _ in newest[offset : offset + limit]]

    def forget_index(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            pipe = self._client.pipeline(transaction=False)
            for key in self._keys.indexes():
                pipe.zrem(key, *task_ids)
            with self._errors("*", "clean the index of"):
                pipe.execute()

    def check_eviction_policy(self, mode: str) -> str | None:
        """Refuse or describe a ``maxmemory-policy`` that could evict journals."""
        return check_eviction_policy(self._client, self._where, mode)

    # -- Plumbing -----------------------------------------------------------------------

    def _eval(self, script: Script, numkeys: int, *keys_then_args: Any) -> Any:
        command = self._command
        try:
            return command("EVALSHA", script.sha, numkeys, *keys_then_args)
        except NoScriptError:
            return command("EVAL", script.source, numkeys, *keys_then_args)

    def _hot_eval(self, script: Script, numkeys: int, *keys_then_args: Any) -> Any:
        """``_eval`` through the held connection, for commands on the hot path."""
        if self._lean is None:
            return self._eval(script, numkeys, *keys_then_args)
        conn = self._lean.connection()
        try:
            return self._lean.call(
                conn.pack_command("EVALSHA", script.sha, numkeys, *keys_then_args)
            )
        except NoScriptError:
            return self._command("EVAL", script.source, numkeys, *keys_then_args)

    def _loading_scripts(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except NoScriptError:
            for script in scripts.ALL:
                self._command("SCRIPT", "LOAD", script.source)
            return call()

    @contextmanager
    def _errors(self, task_id: str, action: str) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise self._error(exc, task_id, action) from exc

    def _error(self, exc: RedisError, task_id: str, action: str) -> BaseException:
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
        except RedisError:
            pass
        return False

    # -- Operators: resume, fork, purge ---------------------------------------------------

    def resume(self, task_id: str, reason: str, require_call: bool = True) -> Resumption:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        flag = "1" if require_call else "0"
        with self._errors(task_id, "resume"):
            reply: list[Any] = self._eval(
                scripts.RESUME, 5, k.meta, k.journal, k.done, ix.all, ix.paused,
                task_id, _now(), reason, flag,
            )  # fmt: skip
        if reply[0] == "resumed":
            return Resumption("resumed", reply[1], reply[2], reply[3] or None, int(reply[4]))
        if reply[0] == "gone":
            return Resumption("gone")
        return Resumption("no-call" if reply[0] == "no-call" else "refused", reply[1])

    def fork(self, task_id: str, fork: Fork) -> bool:
        k = self._keys.invocation(task_id)
        ix = self._keys.indexes(task_id)
        pairs = [part for item in sorted(fork.completions.items()) for part in item]
        with self._errors(task_id, "create the fork"):
            created = self._eval(
                scripts.FORK, 5, k.meta, k.journal, k.done, ix.all, ix.paused,
                task_id, fork.task_name, fork.fingerprint, str(fork.seed), _now(), fork.call,
                fork.reason, len(fork.entries), *fork.entries, *pairs,
            )  # fmt: skip
        return bool(created)

    def forget_if(self, task_id: str, status: str, created_before: float) -> int:
        k = self._keys.invocation(task_id)
        with self._errors(task_id, "purge"):
            reply = self._eval(
                scripts.FORGET_IF, 7, k.meta, k.journal, k.done, *self._keys.indexes(task_id),
                task_id, status, f"{created_before:.6f}",
            )  # fmt: skip
        return int(reply)

    def list_ids_before(
        self, status: str | None, before: float, limit: int, offset: int = 0
    ) -> list[str]:
        ix = self._keys.indexes()
        key = getattr(ix, status) if status in ix._fields else ix.all
        with self._errors("*", "list"):
            found: list[str] = self._command(
                "ZRANGEBYSCORE", key, "-inf", f"({before:.6f}", "LIMIT", offset, limit
            )
        return found


def _now() -> str:
    return f"{time.time():.6f}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _by_score(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


def _redact(url: str) -> str:
    """Return ``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user}:***@{host}" if user else f"***@{host}"
    return f"Redis at {scheme}{sep}{rest}"
