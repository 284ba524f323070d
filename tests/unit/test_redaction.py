"""Passwords never reach a message: every form a Redis URL can hold one in."""

from __future__ import annotations

from typing import Any

import pytest

from celery_durable.errors import ConfigurationError
from celery_durable.settings import DurableSettings, redacted

SECRET = "s3cr3t-pw"

URLS = [
    f"redis://user:{SECRET}@h:6379/0",
    f"redis://:{SECRET}@h:6379/0",
    f"rediss://:{SECRET}@h:6380/0?ssl_cert_reqs=required",
    f"redis://h:6379/0?password={SECRET}",
    f"redis://h:6379/0?db=1&password={SECRET}&socket_timeout=3",
    f"redis://h:6379/0?ssl_password={SECRET}",
    f"redis://h/0?PASSWORD={SECRET}#x",
    f"unix://:{SECRET}@/tmp/redis.sock?db=0",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"Redis://:{SECRET}@h:6379/0",
    f"valkey://user:{SECRET}@h:6379/0",
    f"sentinel://:{SECRET}@s1:26379;sentinel://:{SECRET}@s2:26379",
    f"sentinel://s1:26379; sentinel://user:{SECRET}@s2:26379",
    f"redis://:{SECRET}@ss?x/y@h:1",  # unencoded @ ? / in the password
    f"redis://{SECRET}@h:6379",  # a password written where the user goes
    f"redis://:{SECRET}@h/0?password={SECRET}",
]


@pytest.mark.parametrize("url", URLS)
def test_every_form_of_password_is_redacted(url: str) -> None:
    shown = redacted(url)
    assert SECRET not in shown
    assert "***" in shown


def test_what_is_not_secret_stays_readable() -> None:
    assert redacted("redis://h:6379/0?db=1") == "redis://h:6379/0?db=1"
    assert redacted(f"redis://ada:{SECRET}@h:6379/0") == "redis://ada:***@h:6379/0"
    assert redacted(f"sentinel://s1:26379;sentinel://:{SECRET}@s2:26379") == (
        "sentinel://s1:26379;sentinel://***@s2:26379"
    )


@pytest.mark.parametrize(
    "conf",
    [
        {"durable_redis_url": f"Redis://:{SECRET}@h:6379/0"},
        {"durable_redis_url": f"valkey://:{SECRET}@h:6379/0"},
        {"durable_redis_url": f"http://h/?password={SECRET}"},
        {"durable_redis_options": [("password", SECRET)]},
        {"durable_redis_options": {1: SECRET}},
    ],
)
def test_configuration_errors_hold_no_password(conf: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        DurableSettings.from_conf({"broker_url": "redis://h:6379/0", **conf})
    assert SECRET not in str(raised.value)
    assert "durable_redis" in str(raised.value)
