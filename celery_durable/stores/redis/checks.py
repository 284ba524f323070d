"""Worker start-up checks of the journal's Redis, as RedBeat's ``checks.py`` does them."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from celery_durable.errors import ConfigurationError

#: maxmemory policies under which Redis never evicts a key that has no expiry.
#: Running journals have none; finished ones do and could go before their time.
_SAFE_POLICIES = frozenset({"noeviction"})
_VOLATILE_POLICIES = frozenset({"volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"})


def check_eviction_policy(client: redis.Redis, where: str, mode: str) -> str | None:
    """Refuse or describe a ``maxmemory-policy`` that could evict journals.

    Args:
        client: The journal's Redis.
        where: How to name it in messages.
        mode: ``refuse`` raises for any policy that could evict a running journal,
            and when Redis refuses to tell (``CONFIG GET`` denied); ``warn`` only
            returns the warning; ``ignore`` skips the check.

    Returns:
        A warning to log, or None when the policy is safe or not checked.

    Raises:
        ConfigurationError: the policy could evict running journals, or cannot be
            read, and ``mode`` is ``refuse``.
    """
    if mode == "ignore":
        return None
    try:
        # Any: redis-py 6 types the reply as maybe an Awaitable, as for its asyncio client.
        reply: Any = client.config_get("maxmemory-policy")
        policy = reply.get("maxmemory-policy", "")
    except ResponseError as exc:  # an ACL without CONFIG GET, a managed Redis
        # Not knowing is not safe: refuse, as for a policy known to evict, unless told.
        message = (
            f"could not read maxmemory-policy of {where} ({exc}): this user may not run "
            "CONFIG GET, so nothing tells whether Redis could evict running journals. "
            "Check yourself that maxmemory-policy is 'noeviction', then set "
            "durable_eviction_check = 'warn' (logs this at every worker start) or "
            "'ignore'; or allow the user CONFIG GET (ACL: +config|get)."
        )
        if mode == "refuse":
            raise ConfigurationError(message) from None
        return message
    except RedisError as exc:
        # Redis down at worker start is an outage, not a mistake: the worker must come
        # up and wait for it as it does for the broker, or a restart during an outage
        # takes the worker away too.
        return (
            f"could not reach {where} to check its maxmemory-policy at worker start "
            f"({type(exc).__name__}: {exc}); durable tasks wait for it. Make sure the "
            "policy is 'noeviction' or journals may be evicted"
        )
    if policy in _SAFE_POLICIES:
        return None
    if policy in _VOLATILE_POLICIES:
        return (
            f"{where} has maxmemory-policy {policy!r}: finished journals may be "
            "evicted before durable_retention ends, and a late redelivery would then run "
            "the task again. Set it to 'noeviction'."
        )
    message = (
        f"{where} has maxmemory-policy {policy!r}, which can evict running journals "
        "and make tasks repeat steps. Set maxmemory-policy to 'noeviction' (CONFIG SET "
        "maxmemory-policy noeviction), or set durable_eviction_check = 'warn' to run anyway."
    )
    if mode == "refuse":
        raise ConfigurationError(message)
    return message


def check_replicas(client: Any, where: str, wanted: int, cluster: bool) -> str | None:
    """Refuse ``durable_wait_replicas`` that the journal's Redis cannot meet now.

    Every journal write would wait for that many replicas, time out, and be retried
    as an outage: a worker would take tasks only to retry each for ever. On a cluster
    every primary needs them.

    Returns:
        A warning to log when the replicas cannot be counted (Redis down at worker
        start, or ``INFO`` denied), or None.

    Raises:
        ConfigurationError: a primary has fewer connected replicas than ``wanted``.
    """
    if not wanted:
        return None
    try:
        if cluster:
            found = client.info("replication", target_nodes=client.PRIMARIES)
            # One primary's reply comes as it is; several come by node name.
            infos = {where: found} if "connected_slaves" in found else found
        else:
            infos = {where: client.info("replication")}
    except RedisError as exc:
        return (
            f"could not count the replicas of {where} at worker start "
            f"({type(exc).__name__}: {exc}); durable_wait_replicas={wanted} makes every "
            "journal write wait for them, and retries the task until they have it"
        )
    short = {
        node: int(info.get("connected_slaves", 0))
        for node, info in infos.items()
        if int(info.get("connected_slaves", 0)) < wanted
    }
    if short:
        counts = ", ".join(f"{node} has {count}" for node, count in sorted(short.items()))
        raise ConfigurationError(
            f"durable_wait_replicas={wanted}, but not enough replicas are connected "
            f"({counts}): every journal write would wait for them, time out, and retry its "
            "task for ever. Start the replicas (or check that they reach their primary), "
            "or lower durable_wait_replicas."
        )
    return None
