"""How the Redis store turns Redis's errors into celery-durable's."""

from __future__ import annotations

import re
from typing import TypeAlias

from redis.exceptions import (
    AskError,
    ClusterError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from celery_durable.errors import (
    JournalError,
    JournalRefusedError,
    JournalUnavailableError,
    LeaseLost,
)
from celery_durable.journal.store import not_running

#: What a failed command raises: redis-py's errors, and those a cluster client raises
#: outside them (no node it knows serves the key's slot; keys of one command in several
#: slots, which the key space never builds, but which must not escape as they are).
REDIS_ERRORS = (RedisError, RedisClusterException)
CommandError: TypeAlias = RedisError | RedisClusterException

#: Errors that mean "not now" rather than "never": the connection, and replies such as
#: out of memory under noeviction, a replica after failover, a cluster mid-change (a
#: slot mid-migration gives TRYAGAIN until redis-py's redirects run out: ClusterError,
#: or ASK and MOVED to a node's own client),
#: a script running too long, or a failed save that stops writes.
_UNAVAILABLE_ERRORS = (
    RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, TryAgainError,
    AskError, ClusterError, SlotNotCoveredError,
)  # fmt: skip
_UNAVAILABLE_REPLIES = ("BUSY ", "NOREPLICAS", "MISCONF", "LOADING")
#: How Redis refuses a command, or a command inside a script, to a user whose ACL does
#: not allow it (redis-py raises NoPermissionError for the first; inside a script,
#: Redis 7.0 says the second, Redis 7.2 and Valkey the third).
_REFUSED_REPLIES = ("NOPERM", "The user executing the script can't", "ACL failure in script")


def is_gone(exc: CommandError) -> bool:
    """True when a script found that the invocation no longer exists."""
    return isinstance(exc, ResponseError) and str(exc).startswith("GONE")


def journal_error(
    exc: CommandError, task_id: str, action: str, where: str, data_lost: bool = False
) -> JournalError | LeaseLost:
    """Return the error to raise for ``exc``, met while trying to ``action`` an invocation.

    ``data_lost`` says that Redis lost its whole data set since the invocation started.
    """
    text = str(exc)
    if isinstance(exc, NoPermissionError) or any(r in text for r in _REFUSED_REPLIES):
        # Not an error of this invocation, and not for ever: failing the task would ack
        # its message and leave the invocation running with no TTL. It waits, as in an
        # outage, until the permission is granted.
        return JournalRefusedError(
            f"cannot {action} invocation {task_id}: {where} refused a command for lack of "
            f"a permission ({type(exc).__name__}: {exc}). Grant the Redis user that "
            "celery-durable connects as the ACL in docs/security.md. The write may or may "
            "not have been made; either way the task is retried until it is granted, and "
            "its next delivery resumes from what the journal holds."
        )
    unavailable = isinstance(exc, _UNAVAILABLE_ERRORS) or text.startswith(_UNAVAILABLE_REPLIES)
    if isinstance(exc, ResponseError) and not unavailable:
        if text.startswith("GONE"):
            why = (
                "Redis lost its data since it started (restarted without persistence, or "
                "flushed): configure persistence (appendonly yes) for the journal's Redis"
                if data_lost
                else "forgotten, or expired while it ran"
            )
            return LeaseLost(
                f"cannot {action} invocation {task_id}: it no longer exists in {where} "
                f"({why}). This execution stops and writes nothing more."
            )
        if text.startswith("NOTRUNNING"):
            return LeaseLost(not_running(task_id, action, text.rpartition(" ")[2]))
        if text.startswith("FENCED") and _lost_writes(text):
            return JournalUnavailableError(
                f"cannot {action} invocation {task_id}: {where} holds an older fence than "
                f"this execution's ({text.partition(' ')[2]}): it lost writes since this "
                "execution started (a failover to a replica that had not got them, or a "
                "restart without persistence). The task is retried, and its next execution "
                "goes on from what the journal holds. durable_wait_replicas makes writes "
                "survive a failover."
            )
        if text.startswith("FENCED"):
            return LeaseLost(
                f"cannot {action} invocation {task_id}: another execution took its lease "
                f"({text.partition(' ')[2]}), because this one did not renew it in time or "
                "was thought dead. This execution stops and writes nothing more; the other "
                "one goes on from the journal."
            )
        return JournalError(f"{where} refused to {action} invocation {task_id}: {text}")
    if unavailable:
        return JournalUnavailableError(
            f"cannot {action} invocation {task_id}: {where} is unavailable "
            f"({type(exc).__name__}: {exc}). The write may or may not have been made; "
            "either way the next delivery resumes from what the journal holds, and the "
            "task is retried until Redis takes writes again."
        )
    return JournalError(
        f"cannot {action} invocation {task_id} in {where}: {type(exc).__name__}: {exc}"
    )


_FENCES = re.compile(r"\(fence (\d+), this one (\d+)\)")


def _lost_writes(fenced: str) -> bool:
    """Whether a FENCED reply names a fence older than the writer's own.

    Fences only go up for a task id, across forget, replace and re-creation (start.lua),
    so the journal's Redis lost the start that gave the writer its fence: no other
    execution took the invocation, and nothing will deliver it again unless this one
    retries.
    """
    found = _FENCES.search(fenced)
    return found is not None and int(found[1]) < int(found[2])
