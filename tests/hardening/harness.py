"""What the hardening tests and their worker subprocesses share: the app, the task names.

The workers import ``tests.hardening.proj``, which builds its app with ``make_app`` from
environment variables; the test process builds its client app with the same function.
The broker and the result backend are the shared Redis, under the test's own key
prefix; the journal is there too, unless the test gives a Redis of its own
(``journal_url``: a private redis-server, with an ACL user).
"""

from __future__ import annotations

import os

from celery import Celery

# Task names.
BOTH = "hd.both"
"""``ctx.all`` of two ``run_async`` steps that return at once."""
ECHO = "hd.echo"
"""One step, then its value as the result."""
FAILING = "hd.failing"
"""One step that fails with a ``ValueError``, caught by the body."""
PARENT = "hd.parent"
"""Calls ``hd.child.never`` (routed to a queue nobody consumes) and returns its value."""
NEVER = "hd.child.never"
TOUR = "hd.tour"
"""Steps, an async step, a timer that suspends the invocation, then steps again."""

# Environment variables the worker subprocesses read.
ENV_REDIS_URL = "HD_REDIS_URL"
ENV_JOURNAL_URL = "HD_JOURNAL_URL"
ENV_PREFIX = "HD_PREFIX"
ENV_QUEUE = "HD_QUEUE"
ENV_WAIT_AOF = "HD_WAIT_AOF"

REDIS_URL = os.environ.get(ENV_REDIS_URL, "redis://127.0.0.1:6379/0")


def nobody_queue(queue: str) -> str:
    """A queue no worker consumes: children sent there never run."""
    return f"{queue}-nobody"


def make_app(
    redis_url: str, prefix: str, queue: str, journal_url: str = "", wait_aof: bool = False
) -> Celery:
    """An app whose broker keys, queue and journal keys belong to ``prefix`` alone."""
    app = Celery(f"hd-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {
        "visibility_timeout": 30,
        # Every kombu key carries the test's prefix: no other worker takes our messages.
        "global_keyprefix": f"{prefix}:kombu:",
    }
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_routes={NEVER: {"queue": nobody_queue(queue)}},
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=journal_url or redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        durable_lease_ttl=5.0,
        durable_wait_aof=wait_aof,
        # The minimal ACL (docs/security.md) leaves CONFIG GET out on purpose: whoever
        # runs it checks maxmemory-policy themselves and says so with 'warn'.
        durable_eviction_check="warn" if journal_url else "refuse",
    )
    return app
