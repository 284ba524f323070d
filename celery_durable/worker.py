"""Worker-side components: what runs in a worker's main process, beside the pool.

- ``DurableRequest``, the request class of ``DurableTask``: when a hard time limit kills
  an execution, it journals the failure; when a pool child dies, it frees the lease
  of the dead execution so that the requeued message starts at once.
- A ``task_revoked`` receiver: a revoked (or expired) invocation is journaled as
  ``cancelled``, so that nothing stays ``running`` with no TTL, and its concurrency
  slot is handed on.
- ``StartupChecks``, a bootstep: refuse (or warn about) a Redis that could evict
  journals, and warn about a lease longer than the broker's visibility timeout.
- ``WakeUps``, a bootstep: re-publishes suspended invocations when they are due.
- ``Recovery``, a bootstep: the workers' sweep, one worker at a time. It re-publishes
  running invocations whose message was lost, and cancels those past their deadline.
- ``BrokerLossGuard``, a consumer bootstep: keeps the worker alive when its broker
  connection is lost while it holds unacknowledged messages (Celery 5.7, Redis broker).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import bootsteps, signals
from celery.worker.request import Request

from celery_durable import concurrency, deadlines
from celery_durable.delivery import holder_id
from celery_durable.errors import JournalError, LeaseLost
from celery_durable.journal.entries import encode_outcome
from celery_durable.recovery import interval, recover_lost
from celery_durable.runtime import journal_retention_for, runtime_for
from celery_durable.task import DurableTask
from celery_durable.wakeups import publish_due

logger = logging.getLogger("celery_durable")

#: Longest pause between two looks for due wake-ups, seconds.
WAKEUP_POLL = 0.25
#: Seconds between two tries to claim wake-ups while the journal's Redis fails them.
OUTAGE_POLL = 1.0
#: Seconds at least between two log lines that say they fail.
OUTAGE_LOG_EVERY = 60.0
#: Longest pause between two looks of the sweep for deadlines that passed, seconds: a
#: deadline is enforced within about this long (and the sweep wakes for the next one).
DEADLINE_POLL = 1.0
#: Shortest pause between two looks of the sweep, seconds.
SWEEP_MIN_PAUSE = 0.05
#: How often the sweep looks when recovery is off (``durable_recovery_after = None``).
SWEEP_TURN = 15.0


class DurableRequest(Request):  # type: ignore[misc]
    """The worker's request of a ``DurableTask``, in the worker's main process."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft:
            # The pool killed the execution; it can neither finish nor release.
            message = f"hard time limit ({timeout}s) exceeded"
            _finish_for(self.task, self.id, "failed", "TimeLimitExceeded", message)
            _give_back(self.task, self.id, self.args, self.kwargs)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
        if isinstance(exc, WorkerLostError) and self.worker_pid:
            # The child was this host's: the same name the child's holder_id() gave.
            host = holder_id().rpartition(":")[0]
            _break_lease(self.task, self.id, f"{host}:{self.worker_pid}")
        super().on_failure(exc_info, send_failed_event, return_ok)


@signals.task_revoked.connect  # type: ignore[untyped-decorator]
def _journal_revocation(
    sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False,
    **_: Any,
) -> None:  # fmt: skip
    if not isinstance(sender, DurableTask) or request is None:
        return
    why = "expired" if expired else "terminated" if terminated else "revoked"
    _finish_for(sender, request.id, "cancelled", "TaskRevokedError", why)
    _give_back(sender, request.id, request.args, request.kwargs)


def _give_back(task: Any, task_id: str, args: Any, kwargs: Any) -> None:
    """Hand on the concurrency slot of an invocation finished for its execution."""
    try:
        key, limit = concurrency.concurrency_of(task, tuple(args or ()), dict(kwargs or {}))
    except Exception as exc:  # its options are wrong: it never held a slot then
        logger.warning("celery-durable: %s[%s]: %s", task.name, task_id, exc)
        return
    concurrency.give_back(task.app, runtime_for(task.app).store, task_id, key, limit)


def _finish_for(task: Any, task_id: str, status: str, error_type: str, message: str) -> None:
    """Finish an invocation whose execution cannot: fence it out, start its retention."""
    runtime = runtime_for(task.app)
    record = {
        "type": error_type, "module": "celery.exceptions", "qualname": error_type,
        "message": message, "args": [message], "metadata": {}, "attempts": 1,
    }  # fmt: skip
    try:
        runtime.store.finish(
            task_id, None, status, encode_outcome("json", None, record), runtime.settings.retention,
            journal_retention=journal_retention_for(task.app, task.name),
        )  # fmt: skip
    except JournalError as exc:
        logger.warning("celery-durable: could not journal %s[%s] as %s: %s",
                       task.name, task_id, status, exc)  # fmt: skip
    except LeaseLost:
        pass  # it has no journal (revoked before it ever started, or forgotten)


def _break_lease(task: Any, task_id: str, holder: str) -> None:
    runtime = runtime_for(task.app)
    try:
        runtime.store.break_lease(task_id, holder)
    except JournalError as exc:
        logger.warning("celery-durable: could not free the lease of %s[%s]: %s",
                       task.name, task_id, exc)  # fmt: skip


class StartupChecks(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker start-up step: refuse (or warn about) a Redis that could evict journals or
    lacks the replicas ``durable_wait_replicas`` waits for, and warn about a lease that
    outlasts the broker's visibility timeout."""

    label = "durable start-up checks"

    def start(self, worker: Any) -> None:
        app = worker.app
        if not any(isinstance(task, DurableTask) for task in app.tasks.values()):
            return
        runtime = runtime_for(app)
        for warning in (
            runtime.store.check_eviction_policy(runtime.settings.eviction_check),
            runtime.store.check_replicas(runtime.settings.wait_replicas),
            lease_outlasts_visibility(app.conf, runtime.settings.lease_ttl),
        ):
            if warning:
                logger.warning("celery-durable: %s", warning)


def lease_outlasts_visibility(conf: Any, lease_ttl: float) -> str | None:
    """Describe a lease too long for the Redis transport's visibility timeout, if it is.

    A deferred delivery waits up to a lease as a broker ETA, and a killed worker's
    message comes back after the visibility timeout: both must fit inside it.
    """
    broker = str(conf.broker_url or "")
    if not broker.startswith(("redis://", "rediss://", "sentinel://")):
        return None
    options = conf.broker_transport_options or {}
    visibility = float(options.get("visibility_timeout", 3600))
    if lease_ttl * 2 <= visibility:
        return None
    return (
        f"durable_lease_ttl={lease_ttl:g}s is not well below the Redis transport's "
        f"visibility_timeout={visibility:g}s: a delivery that waits for a lease would be "
        "restored and delivered again while it waits, and a killed worker's message would "
        "come back before its lease is over. Keep durable_lease_ttl under half the "
        "visibility_timeout."
    )


class _Background(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker component that runs ``_run(app)`` in a thread of the worker's main
    process, in workers whose app has durable tasks, until the worker stops."""

    thread_name = "celery-durable"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        if not any(isinstance(task, DurableTask) for task in app.tasks.values()):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(app,), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, app: Any) -> None:
        raise NotImplementedError


class WakeUps(_Background):
    """Worker component: publishes suspended invocations again when they are due.

    A thread of the worker's main process claims due wake-ups (claim.lua: one worker
    per wake-up) and re-publishes their calls. Every worker runs one; between them a
    due wake-up is picked up within ``WAKEUP_POLL`` seconds.
    """

    label = "durable wake-ups"
    thread_name = "celery-durable-wakeups"

    def _run(self, app: Any) -> None:
        store = runtime_for(app).store
        pause, failures, logged_at = 0.0, 0, -OUTAGE_LOG_EVERY
        while not self._stop.wait(pause):
            try:
                until_next = publish_due(app, store)
            except JournalError as exc:
                # Redis is down or refuses: try every second, and say so once a minute,
                # not at every try.
                failures += 1
                if time.monotonic() - logged_at >= OUTAGE_LOG_EVERY:
                    logged_at = time.monotonic()
                    logger.warning(
                        "celery-durable: could not claim wake-ups (%d tries so far; said at "
                        "most once a minute): %s", failures, exc,
                    )  # fmt: skip
                pause = OUTAGE_POLL
                continue
            if failures:
                logger.warning("celery-durable: claiming wake-ups again, after %d failed tries",
                               failures)  # fmt: skip
                failures, logged_at = 0, -OUTAGE_LOG_EVERY
            pause = WAKEUP_POLL if until_next < 0 else min(until_next, WAKEUP_POLL)


class Recovery(_Background):
    """Worker component: the sweep. It publishes running invocations whose message was
    lost, and cancels invocations past their deadline.

    A thread of the worker's main process sweeps while it holds the store's recovery
    turn (one worker at a time; a turn lasts ``interval(durable_recovery_after)``
    seconds): for lost invocations (``celery_durable.recovery``) once per turn, for
    deadlines that passed (``celery_durable.deadlines``) every ``DEADLINE_POLL`` seconds,
    or sooner when the next one is due sooner. ``durable_recovery_after = None`` turns
    the recovery off, not the deadlines.
    """

    label = "durable recovery"
    thread_name = "celery-durable-recovery"

    def _run(self, app: Any) -> None:
        runtime = runtime_for(app)
        store, after = runtime.store, runtime.settings.recovery_after
        turn = interval(after) if after is not None else SWEEP_TURN
        me = f"{holder_id()}:{uuid.uuid4().hex[:8]}"  # the lock's holder while it is our turn
        recover_at = time.monotonic() + turn
        pause = min(turn, DEADLINE_POLL)
        while not self._stop.wait(pause):
            pause = min(turn, DEADLINE_POLL)
            try:
                if not store.take_recovery_turn(turn, me):
                    continue
                if after is not None and time.monotonic() >= recover_at:
                    recover_at = time.monotonic() + turn
                    recover_lost(app, store, after)
                following = deadlines.enforce(app, store, runtime.settings.retention)
                if following >= 0:
                    pause = max(SWEEP_MIN_PAUSE, min(pause, following))
            except JournalError as exc:
                logger.warning("celery-durable: could not sweep: %s", exc)
            except Exception:
                # A bug must not end the sweep for the worker's lifetime: say so, go on.
                logger.exception("celery-durable: the sweep failed")


class BrokerLossGuard(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: a lost broker connection must not end the worker.

    After a lost connection, Celery 5.7's consumer calls ``connection.collect()`` and
    then ``connection.close()``. On kombu's Redis transport, ``collect()`` can leave
    the channel half closed (closing it raised on the dead socket) while it drops the
    transport's client; ``close()`` then closes that channel again, which restores the
    unacknowledged messages through the dropped client: ``AttributeError: 'NoneType'
    object has no attribute 'hostname'``, which Celery does not count as a connection
    error, and the worker exits ("Unrecoverable error"). Every ``DurableTask`` runs
    under ``acks_late``, so a worker that runs one in a pool child or a thread holds
    such a message. Here ``close()`` does nothing once ``collect()`` ran, as in
    Celery 5.6, which only collected: collect already released all it could, and the
    messages it held come back when the visibility timeout restores them.
    """

    label = "durable broker-loss guard"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        handle = consumer.on_connection_error_after_connected

        def on_connection_error_after_connected(exc: BaseException) -> None:
            if consumer.connection is not None:
                _no_close_after_collect(consumer.connection)
            handle(exc)

        consumer.on_connection_error_after_connected = on_connection_error_after_connected


def _no_close_after_collect(connection: Any) -> None:
    collect = connection.collect

    def collect_then_stay_closed(*args: Any, **kwargs: Any) -> None:
        try:
            collect(*args, **kwargs)
        finally:
            connection.close = connection.release = lambda: None

    connection.collect = collect_then_stay_closed


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _add_worker_steps(sender: Any, **_: Any) -> None:
    sender.app.steps["worker"].add(StartupChecks)
    sender.app.steps["worker"].add(WakeUps)
    sender.app.steps["worker"].add(Recovery)
    sender.app.steps["consumer"].add(BrokerLossGuard)
