"""The ``durable_*`` settings, read once from ``app.conf`` and validated.

A wrong value is a ``ConfigurationError`` that names the setting. An unknown
``durable_*`` key is refused too, because a misspelt setting that is silently
ignored is worse than none.
"""

from __future__ import annotations

import logging
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery_durable.codec import Codec, resolve_codec
from celery_durable.errors import ConfigurationError
from celery_durable.policy import RetryPolicy

logger = logging.getLogger("celery_durable")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
EVICTION_CHECKS = ("refuse", "warn", "ignore")
KNOWN = frozenset(
    {
        "durable_redis_url",
        "durable_key_prefix",
        "durable_retention",
        "durable_lease_ttl",
        "durable_codec",
        "durable_eviction_check",
        "durable_retry",
        "durable_eager_journal",
        "durable_max_value_bytes",
        "durable_replay_each_step",
        "durable_redis_cluster",
        "durable_redis_options",
        "durable_wait_replicas",
        "durable_wait_aof",
        "durable_wait_timeout",
        "durable_recovery_after",
        "durable_journal_retention",
    }
)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")
EAGER_JOURNALS = ("memory", "redis")
DEFAULT_MAX_VALUE_BYTES = 8 * 1024 * 1024
#: Shortest ``durable_recovery_after``: a deferred delivery is due a tenth of a second
#: after the lease it waits for, and must not look lost before it arrives.
MIN_RECOVERY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class DurableSettings:
    """Validated settings of one Celery app."""

    redis_url: str
    """Where journals live; empty when nothing says (see ``journal_url``)."""
    key_prefix: str = "durable"
    """First part of every key."""
    retention: float = 86400.0
    """Seconds a finished invocation's outcome is kept (status, result or error,
    fingerprint, times): a later delivery of its task id returns it."""
    journal_retention: float | None = None
    """Seconds a finished invocation's steps are kept (journal, completions, call), at
    most ``retention``; 0 drops them when it finishes; None: ``retention``."""
    lease_ttl: float = 30.0
    """Seconds an execution owns its invocation without renewing; a heartbeat renews it
    every third of that while the execution runs."""
    codec: Codec[Any] = field(default_factory=lambda: resolve_codec("json"))
    """Default codec of steps and results."""
    eviction_check: str = "refuse"
    """What a worker does at start when Redis could evict journals: refuse, warn, ignore."""
    retry: RetryPolicy | None = None
    """Retry policy of steps that name none, in tasks that name none; None means the
    policy each task's Celery retry options describe."""
    eager_journal: str = "memory"
    """Where direct calls and eager execution keep their journal: memory or redis."""
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    """Largest encoded step value or result; larger is refused before it is journaled."""
    replay_each_step: bool = False
    """Test mode: after every new journal entry the execution ends and the task is
    delivered again, so that every step after the first is reached through a replay."""
    redis_cluster: bool = False
    """The URL names a node of a Redis Cluster."""
    redis_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra client options (``master_name`` for ``sentinel://`` URLs, TLS, passwords)."""
    wait_replicas: int = 0
    """After each journal write, wait until this many replicas have it (``WAIT``)."""
    wait_aof: bool = False
    """After each journal write, wait until the local AOF has it (``WAITAOF``)."""
    wait_timeout: float = 1.0
    """How long a write waits for its replicas or its AOF before it counts as not durable."""
    recovery_after: float | None = 60.0
    """Seconds after which a running invocation whose lease ran out, and that waits for
    no retry, is published again by the workers' recovery sweep; None turns it off."""

    def journal_url(self) -> str:
        """The URL of the journal's Redis; the default one, with a warning, if none is set."""
        if self.redis_url:
            return self.redis_url
        message = (
            f"durable_redis_url is not set and the broker is not Redis; journals go to "
            f"{DEFAULT_REDIS_URL}. Set durable_redis_url to say where they belong."
        )
        # Workers run as daemons, where a warning alone may never be seen.
        logger.warning(message)
        warnings.warn(message, stacklevel=3)
        return DEFAULT_REDIS_URL

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> DurableSettings:
        """Read and validate the settings in a Celery ``app.conf``.

        Raises:
            ConfigurationError: a setting is unknown or has a wrong value.
        """
        unknown = sorted(k for k in conf if k.startswith("durable_") and k not in KNOWN)
        if unknown:
            raise ConfigurationError(
                f"unknown setting {unknown[0]!r}; the durable_* settings are {sorted(KNOWN)}."
            )
        options = _redis_options(conf)
        url = _tls_url(_redis_url(conf), options)
        retention = (
            _seconds("durable_retention", conf.get("durable_retention", conf.get("result_expires")))
            or 86400.0
        )
        return cls(
            redis_url=url,
            key_prefix=_key_prefix(conf.get("durable_key_prefix", "durable")),
            retention=retention,
            lease_ttl=_seconds("durable_lease_ttl", conf.get("durable_lease_ttl", 30.0)) or 30.0,
            codec=resolve_codec(conf.get("durable_codec", "json"), "durable_codec"),
            eviction_check=_choice(
                "durable_eviction_check",
                conf.get("durable_eviction_check", "refuse"),
                EVICTION_CHECKS,
            ),
            retry=_policy(conf.get("durable_retry")),
            eager_journal=_choice(
                "durable_eager_journal", conf.get("durable_eager_journal", "memory"), EAGER_JOURNALS
            ),
            max_value_bytes=_byte_count(
                "durable_max_value_bytes",
                conf.get("durable_max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
            ),
            replay_each_step=_flag(
                "durable_replay_each_step", conf.get("durable_replay_each_step", False)
            ),
            redis_cluster=_flag("durable_redis_cluster", conf.get("durable_redis_cluster", False)),
            redis_options=options,
            wait_replicas=_count("durable_wait_replicas", conf.get("durable_wait_replicas", 0)),
            wait_aof=_flag("durable_wait_aof", conf.get("durable_wait_aof", False)),
            wait_timeout=_seconds("durable_wait_timeout", conf.get("durable_wait_timeout", 1.0))
            or 1.0,
            recovery_after=_recovery_after(conf.get("durable_recovery_after", 60.0)),
            journal_retention=journal_retention(
                "durable_journal_retention", conf.get("durable_journal_retention"), retention
            ),
        )

    def steps_retention(self, override: Any = None, name: str = "") -> float:
        """Seconds a finished invocation's steps are kept: ``override`` (a task's
        ``durable_journal_retention``, validated as ``name``) or the app's setting.

        Raises:
            ConfigurationError: ``override`` is not a valid journal retention.
        """
        if override is not None:
            value = journal_retention(name, override, self.retention)
            if value is not None:
                return value
        return self.retention if self.journal_retention is None else self.journal_retention


def redacted(url: str) -> str:
    """``url`` without its passwords, for messages and logs.

    Every form is covered: ``user:password@`` and ``:password@`` before the host (the
    last ``@`` counts, so a password may hold ``@``, ``?`` or ``/`` unencoded), a
    ``password=`` query parameter (and ``ssl_password=``, ``sentinel_password=``), in
    every ``;``-joined part of a Sentinel URL, whatever the scheme. A lone name before
    the ``@`` is masked too: it may be a password written in the user's place.
    """
    return ";".join(_redacted_part(part) for part in _PARTS.split(url))


#: Where a ``;``-joined URL (Sentinel's, as kombu spells it) starts its next part.
_PARTS = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_QUERY_SECRET = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)


def _redacted_part(part: str) -> str:
    scheme, sep, rest = part.partition("://")
    if not sep:
        scheme, rest = "", part
    rest = _QUERY_SECRET.sub(r"\1***", rest)
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user, colon, _ = creds.partition(":")
        rest = f"{user}:***@{host}" if user and colon else f"***@{host}"
    return f"{scheme}{sep}{rest}"


def _redis_url(conf: Mapping[str, Any]) -> str:
    url = conf.get("durable_redis_url")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
            shown = redacted(url) if isinstance(url, str) else f"a {type(url).__name__}"
            raise ConfigurationError(
                f"durable_redis_url={shown!r} is not a Redis URL; write it as "
                "redis://host:port/db (or rediss://, unix://, or sentinel://host:port;"
                "sentinel://host2:port with durable_redis_options={'master_name': ...})."
            )
        return url
    broker = conf.get("broker_url")
    if isinstance(broker, str) and broker.startswith(("redis://", "rediss://", "sentinel://")):
        return broker
    return ""


def _redis_options(conf: Mapping[str, Any]) -> dict[str, Any]:
    value = conf.get("durable_redis_options")
    if value is None:
        value = {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        # Not the value itself: it may hold a password.
        raise ConfigurationError(
            f"durable_redis_options must be a dict of client options with str keys, e.g. "
            f"{{'master_name': 'mymaster'}} for a sentinel:// URL, not a {type(value).__name__}"
            + ("" if not isinstance(value, Mapping) else " with keys " + repr(list(value)))
            + "."
        )
    options = dict(value)
    url = _redis_url(conf)
    tls = conf.get("broker_use_ssl")
    if url and url == conf.get("broker_url") and isinstance(tls, Mapping):
        # The journal is the broker's Redis: it takes the broker's TLS options, as kombu
        # spells them (ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile), under
        # durable_redis_options' own.
        options = {**tls, **options, _BROKER_TLS: True}
    if "ssl_cert_reqs" in options:
        options["ssl_cert_reqs"] = _cert_reqs("durable_redis_options", options["ssl_cert_reqs"])
    if url.startswith("sentinel://") and "master_name" not in options:
        # As kombu's Sentinel transport spells it, when the journal is the broker's Redis.
        broker_options = conf.get("broker_transport_options") or {}
        if url == conf.get("broker_url") and "master_name" in broker_options:
            options["master_name"] = broker_options["master_name"]
        else:
            raise ConfigurationError(
                "durable_redis_url is a sentinel:// URL but durable_redis_options has no "
                "'master_name': name the monitored master, e.g. "
                "durable_redis_options={'master_name': 'mymaster'}."
            )
    return options


#: Celery's spellings of ``ssl_cert_reqs`` (its ``rediss://`` URLs, ``broker_use_ssl``),
#: and redis-py's own, as redis-py spells them.
_CERT_REQS = {
    "CERT_REQUIRED": "required", "CERT_OPTIONAL": "optional", "CERT_NONE": "none",
    "required": "required", "optional": "optional", "none": "none",
}  # fmt: skip
_CERT_REQS_IN_URL = re.compile(r"(?<=[?&])ssl_cert_reqs=([^&#]*)")
#: An option only the settings set: the TLS options came from ``broker_use_ssl``, so the
#: journal uses TLS even on a ``redis://`` or ``sentinel://`` URL, as kombu does.
_BROKER_TLS = "_broker_tls"


def _cert_reqs(name: str, value: Any) -> Any:
    if isinstance(value, ssl.VerifyMode):
        return value
    if isinstance(value, str) and value in _CERT_REQS:
        return _CERT_REQS[value]
    raise ConfigurationError(
        f"{name}: ssl_cert_reqs={value!r} must be CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE "
        "(as Celery spells them; or required, optional, none, or an ssl.VerifyMode)."
    )


def _tls_url(url: str, options: dict[str, Any]) -> str:
    """``url`` with Celery's spelling of ``ssl_cert_reqs`` turned into redis-py's; on TLS
    when the broker's TLS options say so."""

    def spelt(found: re.Match[str]) -> str:
        return f"ssl_cert_reqs={_cert_reqs('durable_redis_url', found[1])}"

    url = _CERT_REQS_IN_URL.sub(spelt, url)
    if options.pop(_BROKER_TLS, False):
        if url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")
        elif url.startswith("sentinel://"):
            options.setdefault("ssl", True)  # the primary's connections, as kombu's
    return url


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name}={value!r} must be a whole number of at least 0.")
    return value


def _key_prefix(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "{}")
        or value.endswith(":")
    ):
        raise ConfigurationError(
            f"durable_key_prefix={value!r} must be a non-empty string without braces that "
            "does not end in ':' (keys are built as <prefix>:{<task_id>}:<part>)."
        )
    return value


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(
            f"{name}={value!r} must be a positive number of seconds or a timedelta."
        )
    return float(value)


def journal_retention(name: str, value: Any, retention: float) -> float | None:
    """``value`` as a journal retention in seconds (None: the retention's), checked.

    Raises:
        ConfigurationError: not a number of seconds of 0 or more, or longer than
            ``retention``.
    """
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ConfigurationError(
            f"{name}={value!r} must be a number of seconds of 0 or more (or a timedelta), or "
            "None for durable_retention's; 0 drops a finished invocation's steps when it "
            "finishes."
        )
    if seconds > retention:
        raise ConfigurationError(
            f"{name}={value!r} is longer than durable_retention ({retention:g} s): a finished "
            "invocation's steps cannot be kept longer than its outcome. Shorten it, or "
            "lengthen durable_retention."
        )
    return float(seconds)


def _recovery_after(value: Any) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not number or seconds < MIN_RECOVERY_AFTER:
        raise ConfigurationError(
            f"durable_recovery_after={value!r} must be a number of seconds of at least "
            f"{MIN_RECOVERY_AFTER:g} (or a timedelta), or None to turn recovery off: a "
            "delivery that waits for a lease comes just after it runs out, and must not "
            "look lost before then."
        )
    return float(seconds)


def _policy(value: Any) -> RetryPolicy | None:
    if value is not None and not isinstance(value, RetryPolicy):
        raise ConfigurationError(
            f"durable_retry={value!r} must be a RetryPolicy, e.g. RetryPolicy(max_attempts=5)."
        )
    return value


def _byte_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
        raise ConfigurationError(f"{name}={value!r} must be a number of bytes of at least 1024.")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r} must be True or False.")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigurationError(f"{name}={value!r} must be one of {list(choices)}.")
    return str(value)
