"""Per-app state: the settings, read once, and the journal stores they point at."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from celery_durable.errors import ConfigurationError
from celery_durable.keys import KeySpace
from celery_durable.settings import DurableSettings
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.durability import Durability


class Runtime:
    """What an app's durable tasks share: its settings and its journal stores."""

    def __init__(self, settings: DurableSettings) -> None:
        self.settings = settings
        self.eager_store = MemoryJournalStore()
        """Journals of eager executions, kept in this process (``durable_eager_journal``)."""
        self._store: RedisJournalStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> RedisJournalStore:
        """The Redis store, connected on first use: eager-only apps never need Redis."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    settings = self.settings
                    self._store = RedisJournalStore.from_url(
                        settings.journal_url(),
                        KeySpace(settings.key_prefix, cluster=settings.redis_cluster),
                        settings.redis_options,
                        Durability(
                            settings.wait_replicas, settings.wait_aof, settings.wait_timeout
                        ),
                    )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


_runtimes: weakref.WeakKeyDictionary[Any, Runtime] = weakref.WeakKeyDictionary()


def journal_retention_for(app: Any, task_name: str) -> float:
    """Seconds the steps of a finished invocation of ``task_name`` are kept: the task's
    ``durable_journal_retention``, else the app's (for the paths that finish an
    invocation without its task running it: a kill, a time limit, a revoke)."""
    settings = runtime_for(app).settings
    task = app.tasks.get(task_name) if task_name else None
    override = getattr(task, "durable_journal_retention", None)
    try:
        return settings.steps_retention(override, f"{task_name}.durable_journal_retention")
    except ConfigurationError:  # refused where the task runs; here the outcome must be written
        return settings.steps_retention()


def runtime_for(app: Any) -> Runtime:
    """Return the runtime of a Celery app, creating it on first use.

    Raises:
        ConfigurationError: a ``durable_*`` setting is wrong.
    """
    runtime = _runtimes.get(app)
    if runtime is None:
        runtime = _runtimes[app] = Runtime(DurableSettings.from_conf(app.conf))
    return runtime


def release_runtime(app: Any) -> None:
    """Close the journal store's connections of ``app``; the next use opens new ones."""
    runtime = _runtimes.pop(app, None)
    if runtime is not None:
        runtime.close()
