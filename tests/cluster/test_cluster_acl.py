"""The journal store contract on a Redis Cluster, as a user with only the documented ACL.

docs/security.md gives the ACL of celery-durable's Redis user and what a cluster adds
to it; ``tests/acl`` reads both from that page. Every node gets the user, and the
contract's test functions run as it (imported as they are, as in
``test_cluster_contract``): every script, every read and listing, the wake-ups' sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore
from tests import acl
from tests.cluster.cluster import LocalCluster
from tests.contract.test_operator_contract import *  # noqa: F403
from tests.contract.test_store_contract import *  # noqa: F403
from tests.contract.test_unreadable_contract import *  # noqa: F403

pytestmark = pytest.mark.system

#: The key prefixes of this module's tests: the user's keys.
PREFIX = "ca-"


@pytest.fixture
def acl_url(redis_cluster: LocalCluster) -> str:
    """The URL of one node, as the user (created on every node, each time: a node that
    restarted has lost it)."""
    redis_cluster.wait_healthy()
    for port in redis_cluster.ports:
        node = redis_cluster.client(port)
        try:
            acl.add_user(node, f"{PREFIX}*", acl.CLUSTER)
        finally:
            node.close()
    return acl.url(redis_cluster.ports[0])


@pytest.fixture
def store(redis_cluster: LocalCluster, acl_url: str) -> Iterator[RedisJournalStore]:
    """The Redis store on the cluster, as the user with the documented ACL."""
    prefix = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    cluster_store = RedisJournalStore.from_url(acl_url, KeySpace(prefix, cluster=True))
    yield cluster_store
    cluster_store.close()
    redis_cluster.delete_prefix(prefix)
