"""Per-app state: the settings, read once, and the journal store they point at."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from celery_durable.keys import KeySpace
from celery_durable.settings import DurableSettings
from celery_durable.stores.redis import RedisJournalStore


@dataclass(frozen=True, slots=True)
class Runtime:
    """What an app's durable tasks share: its settings and its journal store."""

    settings: DurableSettings
    store: RedisJournalStore


_runtimes: weakref.WeakKeyDictionary[Any, Runtime] = weakref.WeakKeyDictionary()


def runtime_for(app: Any) -> Runtime:
    """Return the runtime of a Celery app, creating it on first use.

    Raises:
        ConfigurationError: a ``durable_*`` setting is wrong.
    """
    runtime = _runtimes.get(app)
    if runtime is None:
        settings = DurableSettings.from_conf(app.conf)
        store = RedisJournalStore.from_url(settings.redis_url, KeySpace(settings.key_prefix))
        runtime = _runtimes[app] = Runtime(settings, store)
    return runtime


def release_runtime(app: Any) -> None:
    """Close the journal store's connections of ``app``; the next use opens new ones."""
    runtime = _runtimes.pop(app, None)
    if runtime is not None:
        runtime.store.client.close()
