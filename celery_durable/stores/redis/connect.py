"""Making the journal's Redis client: one Redis, a Sentinel-managed primary, or a Cluster.

URLs are spelt as kombu spells them: ``redis://``, ``rediss://``, ``unix://``, and
``sentinel://host:port;sentinel://host2:port`` (with ``master_name`` in the options) for
a primary that Sentinel watches. A cluster is named by the URL of any of its nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from celery_durable.errors import ConfigurationError
from celery_durable.settings import redacted

#: Client options every journal client gets: text replies, and timeouts so that a
#: Redis that stops answering is an outage, not a hang.
COMMON: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
}


def client_for(url: str, cluster: bool, options: Mapping[str, Any]) -> Any:
    """Return a client for the journal's Redis: ``redis.Redis`` or ``RedisCluster``.

    Raises:
        ConfigurationError: the URL and options do not describe a Redis to connect to.
    """
    settings = {**COMMON, **options}
    if url.startswith("sentinel://"):
        if cluster:
            raise ConfigurationError(
                "durable_redis_cluster is on, but durable_redis_url is a sentinel:// URL: a "
                "cluster does not use Sentinel. Name a node of the cluster (redis://...)."
            )
        return _sentinel_primary(url, settings)
    if cluster:
        cluster_from_url: Any = RedisCluster.from_url  # untyped before redis-py 7
        return cluster_from_url(url, **settings)
    return redis.Redis.from_url(url, **settings)


def _sentinel_primary(url: str, settings: dict[str, Any]) -> redis.Redis:
    master_name = settings.pop("master_name", None)
    if not master_name:
        raise ConfigurationError(
            "a sentinel:// journal URL needs durable_redis_options={'master_name': ...}."
        )
    sentinel_kwargs = settings.pop("sentinel_kwargs", None)
    hosts, password, db = [], None, 0
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigurationError(
                f"durable_redis_url: {redacted(part)!r} is not sentinel://host:port (several are "
                "joined with ';', as kombu spells them)."
            )
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = unquote(parsed.password) if parsed.password else password
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    if password is not None:
        settings.setdefault("password", password)
    settings.setdefault("db", db)
    # Any: redis-py left Sentinel untyped before 8.x; through Any, every version checks.
    sentinel_type: Any = Sentinel
    sentinel: Any = sentinel_type(hosts, sentinel_kwargs=sentinel_kwargs, **settings)
    primary: redis.Redis = sentinel.master_for(master_name)
    return primary
