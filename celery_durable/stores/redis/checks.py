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
            ``warn`` only returns the warning, ``ignore`` skips the check.

    Returns:
        A warning to log, or None when the policy is safe or not checked.

    Raises:
        ConfigurationError: the policy could evict running journals and ``mode``
            is ``refuse``.
    """
    if mode == "ignore":
        return None
    try:
        # Any: redis-py 6 types the reply as maybe an Awaitable, as for its asyncio client.
        reply: Any = client.config_get("maxmemory-policy")
        policy = reply.get("maxmemory-policy", "")
    except ResponseError as exc:  # managed Redis often forbids CONFIG
        return (
            f"could not read maxmemory-policy of {where} ({exc}); make sure it is "
            "'noeviction' or journals may be evicted"
        )
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
