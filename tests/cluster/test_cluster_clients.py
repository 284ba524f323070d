"""The journal's cluster client, as an app's runtime holds it."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery

from celery_durable import get_invocation
from celery_durable.runtime import release_runtime, runtime_for
from tests.cluster.cluster import LocalCluster, close_cluster_client
from tests.processes import wait_for

pytestmark = pytest.mark.system


def _connections_named(cluster: LocalCluster, name: str) -> int:
    """Connections with client name ``name`` on every node of the cluster."""
    total = 0
    for port in cluster.ports:
        listing = str(cluster.raw(port, "CLIENT", "LIST"))
        total += sum(f" name={name} " in f" {line} " for line in listing.splitlines())
    return total


def test_releasing_the_runtime_closes_the_journals_connections(
    redis_cluster: LocalCluster,
) -> None:
    """``release_runtime`` says it closes the journal store's connections. On a cluster
    the client is ``RedisCluster.from_url``, whose ``close()`` leaves every node's pool
    connected (redis-py gives each node's ``Redis`` a pool it does not own)."""
    name = f"durable-{uuid.uuid4().hex[:8]}"
    app = Celery("clients", set_as_current=False)
    app.conf.update(
        durable_redis_url=redis_cluster.url,
        durable_redis_cluster=True,
        durable_key_prefix=f"c-{uuid.uuid4().hex[:8]}",
        durable_redis_options={"client_name": name},
    )
    client = runtime_for(app).store.client
    for n in range(20):  # reads on every master
        assert get_invocation(app, f"nope-{n}") is None
    assert _connections_named(redis_cluster, name) >= 3

    release_runtime(app)
    try:
        wait_for(
            lambda: _connections_named(redis_cluster, name) == 0,
            "release_runtime to close the journal's connections to the cluster",
            timeout=3,
        )
    finally:
        close_cluster_client(client)
        app.close()
