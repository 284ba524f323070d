"""What the test process and the compat worker share: the app factory, key names, and
how a value or an exception is written down so that two runs can be compared.

The worker subprocess imports ``tests.compat.proj``, which builds its app with
``make_app`` from environment variables; the test process builds its client app with the
same function, so both agree on the broker and backend key prefixes and the queue.

What a worker observes (callbacks, errbacks, signals, step runs) is recorded in Redis
under ``<prefix>:rec:<tag>``, where ``tag`` is the keyword argument every task under test
is sent with: one tag per variant of one case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Celery
from celery.exceptions import (
    ChordError,
    MaxRetriesExceededError,
    Reject,
    Retry,
    TaskRevokedError,
)
from kombu.exceptions import EncodeError

ENV_REDIS_URL = "DURABLE_COMPAT_REDIS_URL"
ENV_PREFIX = "DURABLE_COMPAT_PREFIX"
ENV_QUEUE = "DURABLE_COMPAT_QUEUE"

#: The two variants of every body: a plain Celery task and a DurableTask.
VARIANTS = ("plain", "durable")


class CompatError(Exception):
    """An exception class of the project's own, importable where results are read."""


def make_app(redis_url: str, prefix: str, queue: str) -> Celery:
    """Return an app whose broker keys, result keys, queue and journals belong to ``prefix``."""
    app = Celery(f"compat-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": 3600,
            # Every kombu key carries the run's prefix: no other worker on this Redis
            # ever takes or restores our messages.
            "global_keyprefix": f"{prefix}:kombu:",
        },
        result_backend_transport_options={"global_keyprefix": f"{prefix}:result:"},
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        result_expires=600,
        durable_redis_url=redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
    )
    return app


@dataclass(frozen=True)
class Keys:
    """Names of the keys where the worker records what it observed, outside any journal."""

    prefix: str

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "rec", *map(str, parts)])

    def callbacks(self, tag: str) -> str:
        """List: JSON of each callback or errback that ran for ``tag``."""
        return self._key("callbacks", tag)

    def signals(self, tag: str) -> str:
        """List: JSON of each task_success, task_failure, task_retry of a task of ``tag``."""
        return self._key("signals", tag)

    def postruns(self, tag: str) -> str:
        """List: JSON of each task_postrun (an execution that ended) of ``tag``."""
        return self._key("postruns", tag)

    def runs(self, tag: str, step: str) -> str:
        """Counter: how many times the function of ``step`` ran for ``tag``."""
        return self._key("runs", tag, step)

    def unacked(self) -> str:
        """The hash of kombu's Redis transport holding messages taken and not acked."""
        return f"{self.prefix}:kombu:unacked"


def short_name(task_name: str) -> str:
    """``plain.add`` and ``durable.add`` are both ``add``."""
    variant, _, name = task_name.partition(".")
    return name if variant in VARIANTS else task_name


def typed(value: Any) -> Any:
    """A JSON-able picture of ``value`` that keeps every type: ``13`` is ``["int", "13"]``."""
    if isinstance(value, dict):
        return {"dict": {str(k): typed(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {type(value).__name__: [typed(v) for v in value]}
    return [qualified(type(value)), repr(value)]


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: The exception types a worker-side record names when an exception is an instance of
#: them. An exception may be an instance of more (a DurableTask's step failure is also a
#: TerminalError); what counts is that it is an instance of the same ones as a plain
#: task's.
WATCHED: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "RuntimeError": RuntimeError,
    "ConnectionError": ConnectionError,
    "CompatError": CompatError,
    "TimeLimitExceeded": TimeLimitExceeded,
    "SoftTimeLimitExceeded": SoftTimeLimitExceeded,
    "ChordError": ChordError,
    "TaskRevokedError": TaskRevokedError,
    "MaxRetriesExceededError": MaxRetriesExceededError,
    "Retry": Retry,
    "Reject": Reject,
    "EncodeError": EncodeError,
}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def without_ids(text: str) -> str:
    """``text`` with every task id (a uuid) written as ``<id>``: ids differ per run."""
    return _UUID.sub("<id>", text)


def describe_exc(exc: BaseException | None) -> dict[str, Any] | None:
    """What an observer that holds the exception object itself saw of it: a signal, a
    new-style errback, the caller in eager mode. (Exceptions that ``get()`` rebuilds from
    the result backend are compared by their exact type instead.)"""
    if exc is None:
        return None
    kinds = [name for name, cls in WATCHED.items() if isinstance(exc, cls)]
    return {
        "is": kinds or [f"other:{qualified(type(exc))}"],
        "message": without_ids(str(exc)),
    }
