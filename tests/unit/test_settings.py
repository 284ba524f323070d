"""Settings: defaults, and errors that name the setting."""

from __future__ import annotations

import ssl
from datetime import timedelta
from typing import Any

import pytest

from celery_durable.errors import ConfigurationError
from celery_durable.settings import DurableSettings

REDIS = {"broker_url": "redis://10.0.0.1:6379/2"}


def read(**conf: Any) -> DurableSettings:
    return DurableSettings.from_conf({**REDIS, **conf})


def test_defaults_follow_the_broker_and_result_expires() -> None:
    settings = read(result_expires=timedelta(hours=2))
    assert settings.redis_url == "redis://10.0.0.1:6379/2"
    assert settings.key_prefix == "durable"
    assert settings.retention == 7200.0
    assert settings.lease_ttl == 30.0
    assert settings.codec.name == "json"
    assert settings.eviction_check == "refuse"


def test_retention_defaults_to_a_day() -> None:
    assert read().retention == 86400.0


def test_a_non_redis_broker_falls_back_with_a_warning_when_the_journal_is_used() -> None:
    settings = DurableSettings.from_conf({"broker_url": "amqp://guest@localhost//"})
    # Eager-only apps never reach the journal's Redis, and hear nothing about it.
    with pytest.warns(UserWarning, match="durable_redis_url is not set"):
        assert settings.journal_url() == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("durable_redis_url", "http://x", "durable_redis_url='http://x' is not a Redis URL"),
        ("durable_key_prefix", "a:", "durable_key_prefix='a:' must be"),
        ("durable_key_prefix", "{x}", "durable_key_prefix='{x}' must be"),
        ("durable_retention", -5, "durable_retention=-5 must be a positive"),
        ("durable_lease_ttl", "30", "durable_lease_ttl='30' must be a positive"),
        ("durable_codec", "yaml", "durable_codec='yaml' is not a codec"),
        ("durable_eviction_check", "maybe", "durable_eviction_check='maybe' must be one of"),
        ("durable_eager_journal", "disk", "durable_eager_journal='disk' must be one of"),
        ("durable_max_value_bytes", 10, "durable_max_value_bytes=10 must be a number of bytes"),
        ("durable_retension", 5, "unknown setting 'durable_retension'"),
        ("durable_recovery_after", 0.5, "durable_recovery_after=0.5 must be a number of seconds"),
        ("durable_recovery_after", "60", "durable_recovery_after='60' must be a number of second"),
        ("durable_recovery_after", True, "or None to turn recovery off"),
        ("durable_journal_retention", -1, "durable_journal_retention=-1 must be a number of sec"),
        ("durable_journal_retention", "0", "durable_journal_retention='0' must be a number of"),
        ("durable_journal_retention", 86401, "is longer than durable_retention \\(86400 s\\)"),
    ],
)
def test_a_wrong_setting_is_named(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        read(**{name: value})


# -- TLS, as Celery spells it --------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelt", "meant"),
    [("CERT_REQUIRED", "required"), ("CERT_OPTIONAL", "optional"), ("CERT_NONE", "none"),
     ("required", "required")],
)  # fmt: skip
def test_celerys_ssl_cert_reqs_in_the_url_is_carried_over(spelt: str, meant: str) -> None:
    url = f"rediss://:pw@h:6380/0?ssl_cert_reqs={spelt}&db=1"
    assert read(broker_url=url).redis_url == f"rediss://:pw@h:6380/0?ssl_cert_reqs={meant}&db=1"
    assert read(durable_redis_url=url).redis_url.endswith(f"ssl_cert_reqs={meant}&db=1")


def test_the_brokers_tls_options_carry_over_when_the_journal_is_the_brokers_redis() -> None:
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}
    settings = read(broker_url="rediss://h:6380/0", broker_use_ssl=tls)
    assert settings.redis_url == "rediss://h:6380/0"
    assert dict(settings.redis_options) == tls
    # kombu makes a redis:// broker with broker_use_ssl a TLS one: so is the journal.
    plain = read(broker_url="redis://h:6380/0", broker_use_ssl=tls)
    assert plain.redis_url == "rediss://h:6380/0" and dict(plain.redis_options) == tls
    sentinel = read(
        broker_url="sentinel://s1:26379",
        broker_transport_options={"master_name": "m"},
        broker_use_ssl={"ssl_cert_reqs": "CERT_NONE"},
    )
    assert dict(sentinel.redis_options) == {
        "ssl_cert_reqs": "none",
        "master_name": "m",
        "ssl": True,
    }
    # durable_redis_options wins over the broker's; another Redis takes none of them.
    own = read(
        broker_url="rediss://h:6380/0",
        broker_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE},
        durable_redis_options={"ssl_cert_reqs": "CERT_REQUIRED"},
    )
    assert dict(own.redis_options) == {"ssl_cert_reqs": "required"}
    other = read(broker_use_ssl=tls, durable_redis_url="rediss://elsewhere:6380/0")
    assert dict(other.redis_options) == {}


@pytest.mark.parametrize(
    "conf",
    [
        {"broker_url": "rediss://h:6380/0?ssl_cert_reqs=maybe"},
        {"durable_redis_url": "rediss://h:6380/0?ssl_cert_reqs=CERT_MAYBE"},
        {"durable_redis_options": {"ssl_cert_reqs": "CERT_MAYBE"}},
        {"broker_url": "rediss://h:6380/0", "broker_use_ssl": {"ssl_cert_reqs": 7}},
    ],
)
def test_a_wrong_ssl_cert_reqs_is_named_at_once(conf: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"ssl_cert_reqs=.* must be CERT_REQUIRED"):
        read(**conf)


def test_recovery_defaults_to_a_minute_and_none_turns_it_off() -> None:
    assert read().recovery_after == 60.0
    assert read(durable_recovery_after=None).recovery_after is None
    assert read(durable_recovery_after=timedelta(minutes=5)).recovery_after == 300.0
    assert read(durable_recovery_after=1).recovery_after == 1.0


def test_journal_retention_defaults_to_the_retention_and_may_be_0() -> None:
    assert read(durable_retention=3600).steps_retention() == 3600.0
    assert read(durable_journal_retention=0).steps_retention() == 0.0
    settings = read(durable_retention=3600, durable_journal_retention=timedelta(minutes=10))
    assert settings.steps_retention() == 600.0
    # A task's own: None keeps the app's; a wrong one is named as the task's.
    assert settings.steps_retention(None, "shop.order.durable_journal_retention") == 600.0
    assert settings.steps_retention(0, "shop.order.durable_journal_retention") == 0.0
    with pytest.raises(ConfigurationError, match=r"shop\.order\.durable_journal_retention=7200 is"):
        settings.steps_retention(7200, "shop.order.durable_journal_retention")
