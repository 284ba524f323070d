"""Worker-side components of celery-durable: bootsteps that run in every worker."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps, signals

from celery_durable.runtime import runtime_for
from celery_durable.task import DurableTask

logger = logging.getLogger("celery_durable")


class EvictionPolicyCheck(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker start-up step: refuse (or warn about) a Redis that could evict journals."""

    label = "durable eviction check"

    def start(self, worker: Any) -> None:
        app = worker.app
        if not any(isinstance(task, DurableTask) for task in app.tasks.values()):
            return
        runtime = runtime_for(app)
        warning = runtime.store.check_eviction_policy(runtime.settings.eviction_check)
        if warning:
            logger.warning("celery-durable: %s", warning)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _add_startup_check(sender: Any, **_: Any) -> None:
    sender.app.steps["worker"].add(EvictionPolicyCheck)
