"""Sentinel URLs as settings: what is refused, and what a URL says. No server is needed:
redis-py's Sentinel client connects only when it is used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from celery_durable import ConfigurationError
from celery_durable.keys import KeySpace
from celery_durable.runtime import release_runtime, runtime_for
from celery_durable.settings import DurableSettings
from celery_durable.stores.redis import RedisJournalStore

URL = "sentinel://127.0.0.1:26379"


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("sentinel-settings", broker="memory://", set_as_current=False)
    yield app
    release_runtime(app)
    app.close()


def test_a_sentinel_url_without_master_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"durable_redis_options.*'master_name'"):
        DurableSettings.from_conf({"durable_redis_url": URL})
    with pytest.raises(ConfigurationError, match="master_name"):
        DurableSettings.from_conf({"durable_redis_url": URL, "durable_redis_options": {}})


def test_an_app_is_refused_when_it_first_uses_its_journal(app: Celery) -> None:
    app.conf.durable_redis_url = URL
    with pytest.raises(ConfigurationError, match="master_name"):
        runtime_for(app)


def test_the_store_refuses_a_sentinel_url_without_master_name_too() -> None:
    with pytest.raises(ConfigurationError, match="master_name"):
        RedisJournalStore.from_url(URL, KeySpace("x"), options={})


def test_the_master_name_of_a_sentinel_broker_serves_the_journal_on_the_broker() -> None:
    # The journal defaults to the broker's URL: kombu's own option then names the master.
    settings = DurableSettings.from_conf(
        {"broker_url": URL, "broker_transport_options": {"master_name": "mymaster"}}
    )
    assert settings.redis_url == URL
    assert settings.redis_options == {"master_name": "mymaster"}
    # A journal elsewhere does not borrow the broker's master name.
    with pytest.raises(ConfigurationError, match="master_name"):
        DurableSettings.from_conf(
            {
                "broker_url": URL,
                "broker_transport_options": {"master_name": "mymaster"},
                "durable_redis_url": "sentinel://127.0.0.1:26380",
            }
        )


def test_several_sentinels_are_joined_with_semicolons_as_kombu_spells_them() -> None:
    url = "sentinel://:s3cret@127.0.0.1:26379/2;sentinel://127.0.0.1:26380/2"
    store = RedisJournalStore.from_url(url, KeySpace("x"), options={"master_name": "m"})
    pool = store.client.connection_pool
    hosts = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ]
    assert hosts == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
    assert pool.service_name == "m"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "s3cret"
    assert "Redis at sentinel://***@127.0.0.1:26379/2" in store._where  # no password in logs
    store.client.close()
    with pytest.raises(ConfigurationError, match="is not sentinel://host:port"):
        RedisJournalStore.from_url(
            "sentinel://127.0.0.1:26379;redis://127.0.0.1:6379", KeySpace("x"), {"master_name": "m"}
        )


def test_a_cluster_does_not_take_a_sentinel_url() -> None:
    with pytest.raises(ConfigurationError, match="cluster does not use Sentinel"):
        RedisJournalStore.from_url(URL, KeySpace("x", cluster=True), options={"master_name": "m"})
