"""Recovering invocations whose message is lost: the sweep that publishes them again.

A ``running`` invocation is driven by a message: the one an execution holds, or the
retry or deferral it published. If that message is gone (the broker lost it, a worker
without late acknowledgement died, someone purged the queue), nothing delivers the
invocation again. Its lease runs out and stays out. The sweep finds running invocations
whose lease ran out, and whose retry (if they wait for one) was due, more than
``durable_recovery_after`` seconds ago, and publishes their stored call again under the
same task id.

Nothing else is touched: a suspended or paused invocation is not running, and a
deferred delivery is due just after the lease it waits for. A publish that turns out
to be a duplicate (the message was only late) runs nothing twice: the lease defers it,
or the finished invocation answers with its recorded outcome.

Every worker runs the sweep (``worker.Recovery``); one at a time does the work, the one
that takes the store's recovery turn.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery_durable.journal.store import JournalStore
from celery_durable.wakeups import publish

logger = logging.getLogger("celery_durable")

#: Running invocations claimed per round trip.
PAGE = 200
#: Longest pause between two sweeps, seconds.
LONGEST_INTERVAL = 15.0


def interval(after: float) -> float:
    """Seconds between two sweeps for ``durable_recovery_after``: a lost invocation is
    published again at most this long after it counts as lost."""
    return min(LONGEST_INTERVAL, max(0.25, after / 4))


def recover_lost(app: Any, store: JournalStore, after: float) -> int:
    """Publish again every invocation that counts as lost now; return how many.

    Raises:
        JournalError: the journal's Redis could not be reached.
    """
    # Only an invocation created before then can have a lease that ran out that long ago.
    before = time.time() - after
    published, offset = 0, 0
    while True:
        task_ids = store.list_ids_before("running", before, PAGE, offset)
        for task_id, call in zip(task_ids, store.recover(task_ids, after), strict=True):
            if call is None:
                continue
            if not call:
                logger.warning(
                    "celery-durable: invocation %s is running, but no execution has held it "
                    "for over %g s and it has no stored call to publish it again with (it was "
                    "started by an older version). Forget it, or publish its task again "
                    "with the same task id and arguments.",
                    task_id, after,
                )  # fmt: skip
                continue
            try:
                publish(app, call)
            except Exception as exc:
                # Claimed all the same: the next claim comes after durable_recovery_after.
                logger.warning("celery-durable: could not recover invocation %s: %s",
                               task_id, exc)  # fmt: skip
                continue
            published += 1
            logger.warning(
                "celery-durable: recovered invocation %s: running, but no execution has held "
                "it for over %g s and no retry was due, so its message was lost; published "
                "it again",
                task_id, after,
            )  # fmt: skip
        if len(task_ids) < PAGE:
            return published
        offset += len(task_ids)
