"""``DurableTask``: a Celery task whose body replays from its journal on redelivery.

This module is the Celery glue of one execution: it picks the journal, starts the
execution (one round trip), runs the body and records its outcome. How an execution
that stops early maps onto Celery's control flow (retries, deferrals, outages,
suspension, ``Task.replace``) is in ``flow``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, NoReturn

from celery.exceptions import Ignore

from celery_durable import concurrency, delivery, invocation
from celery_durable.celery_errors import Escape, ResultEncodeError, escaped, shield_from_autoretry
from celery_durable.children import CeleryHost
from celery_durable.codec import Codec, resolve_codec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.engine.lease import KEEPER
from celery_durable.engine.replay_each_step import AbandonExecution, ReplayEachStep, must_replay
from celery_durable.errors import (
    CodecError,
    ContextError,
    JournalError,
    JournalUnavailableError,
    LeaseLost,
    NonDeterminismError,
    Paused,
    RetryableError,
    StepRetry,
    Suspended,
    ValueTooLargeError,
)
from celery_durable.fingerprint import fingerprint
from celery_durable.flow import (
    CONTROL_FLOW,
    NOT_FINAL,
    OWN_FROM_HEADER,
    CeleryFlow,
    EagerWait,
    Outage,
    current,
    retrying,
)
from celery_durable.journal.store import FINISHED, JournalStore
from celery_durable.policy import RetryPolicy
from celery_durable.runtime import Runtime, runtime_for
from celery_durable.settings import DurableSettings
from celery_durable.signals import observer_for
from celery_durable.wakeups import check_arguments_size

logger = logging.getLogger("celery_durable")


class DurableTask(CeleryFlow):
    """A Celery task with a durable context, ``self.ctx``.

    Late acknowledgement and ``reject_on_worker_lost`` are on, because a message
    that comes back after a crash is what lets the journal resume the work.
    """

    acks_late = True
    reject_on_worker_lost = True
    #: The worker-side request: it finishes the journal of a task killed by a hard time
    #: limit, and frees the lease of a pool child that died.
    Request = "celery_durable.worker:DurableRequest"

    #: Codec of step values and of the result when a step names none; a codec name
    #: or object. None means the app's ``durable_codec`` setting.
    durable_codec: str | Codec[Any] | None = None

    #: Retry policy of steps that name none. None means the app's ``durable_retry``
    #: setting, else the policy this task's Celery retry options describe.
    durable_retry: RetryPolicy | None = None

    #: Seconds from an invocation's creation to its deadline, past which it is cancelled
    #: (as ``cancel_invocation`` does); None for none. A parent's ``ctx.call(sig,
    #: timeout=...)`` replaces it for that child.
    durable_timeout: float | None = None

    #: Seconds a finished invocation of this task keeps its steps (journal, completions,
    #: call), at most ``durable_retention``; 0 drops them when it finishes. Its outcome
    #: stays until ``durable_retention`` either way. None means the app's
    #: ``durable_journal_retention`` setting.
    durable_journal_retention: float | timedelta | None = None

    #: At most ``durable_concurrency_limit`` invocations with the same key hold a slot at
    #: a time, from their first step to their finish; the others wait, suspended, in
    #: arrival order. The name of a parameter (its value: a str or an int), or a callable
    #: that takes the task's arguments and returns a str. None: no key.
    durable_concurrency_key: str | Callable[..., str] | None = None
    durable_concurrency_limit: int = 1

    @property
    def ctx(self) -> DurableContext:
        """The durable context of the invocation running now."""
        running = current.get()
        if running is None:
            raise ContextError(
                f"self.ctx of {self.name} was used outside a running invocation. "
                "It exists only while the task body runs (through a worker, apply(), or a "
                "direct call)."
            )
        execution, ctx = running
        execution.ensure_usable("self.ctx")
        return ctx

    # -- Sending ------------------------------------------------------------------------

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Arguments whose fingerprint would change between deliveries are refused here,
        # where the caller sees the error, not at every delivery in a worker. A retry of
        # a running execution fingerprinted its arguments as its message was built.
        if retrying.get() is None:
            fingerprint(args or (), kwargs or {})
            limit = runtime_for(self.app).settings.max_value_bytes
            check_arguments_size(self.name, args, kwargs, limit)
        return super().apply_async(args, kwargs, **options)

    # -- One execution ------------------------------------------------------------------

    def apply(
        self, args: Any = None, kwargs: Any = None, link: Any = None, link_error: Any = None,
        task_id: Any = None, retries: Any = None, throw: Any = None, **options: Any,
    ) -> Any:  # fmt: skip
        """Celery's ``Task.apply``, noting whether it raises the task's errors (``throw``,
        ``task_eager_propagates``): then a step's retry runs here (``__call__``)."""
        if throw is None:
            throw = self.app.conf.task_eager_propagates
        token = _eager_throws.set(bool(throw))
        try:
            return super().apply(args, kwargs, link, link_error, task_id, retries, throw, **options)
        finally:
            _eager_throws.reset(token)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._execute(args, kwargs)
        except StepRetry as signal:
            # Celery's max_retries must never cut a step's own policy short.
            exc = signal.error or RetryableError(str(signal))
            # A whole number of seconds reads as Celery's own: "Retry in 0s".
            countdown = int(signal.countdown) if signal.countdown.is_integer() else signal.countdown
            raise self.retry(exc=exc, countdown=countdown, max_retries=sys.maxsize) from None
        except Outage as outage:
            if self.request.is_eager or self.request.called_directly:
                raise outage.error from None  # nobody would redeliver it: the caller sees it
            raise self._retry_until_redis_is_back(outage) from outage.error

    def _execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one execution: replay the journal, run what is new, record the outcome."""
        runtime = runtime_for(self.app)
        store, task_id, shared = delivery.journal_of(self.request, runtime)
        own_from = self.request.get(OWN_FROM_HEADER)
        while True:
            try:
                return self._execute_once(runtime, store, task_id, shared, args, kwargs, own_from)
            except EagerWait as wait:
                # No worker would wake an eager execution: wait for its timer here.
                time.sleep(wait.seconds)
            except AbandonExecution as abandoned:
                # durable_replay_each_step: deliver it again, to replay what it journaled;
                # the next execution takes over what it journaled, as if it had run it.
                own_from = f"{abandoned.fence}:{abandoned.own_from}"
                if not (self.request.is_eager or self.request.called_directly):
                    headers = {**(self.request.headers or {}), OWN_FROM_HEADER: own_from}
                    raise self.retry(
                        countdown=0, max_retries=sys.maxsize, headers=headers
                    ) from None
            except StepRetry:
                if not (self.request.is_eager and _eager_throws.get()):
                    raise
                # Celery would raise its Retry to apply()'s caller, and nothing would run
                # it. Run it here and now, as Celery runs eager retries (recursively, so a
                # policy that never gives up ends in a RecursionError, not a hang), and
                # the steps before it replay as on a worker. The attempt is recorded and
                # the lease released already.
                self.request.retries = int(self.request.retries or 0) + 1
                return self._execute(args, kwargs)

    def _execute_once(
        self,
        runtime: Runtime,
        store: JournalStore,
        task_id: str,
        shared: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        own_from: str | None = None,
    ) -> Any:
        settings = runtime.settings
        codec = self._codec(settings.codec)
        start, oversize, key, limit = delivery.prepare_start(
            self, task_id, shared, settings, args, kwargs
        )
        stored_call = start.call

        def call() -> str:
            return stored_call

        steps = self._steps_retention(settings)
        try:
            started = invocation.begin(
                store, task_id, start, codec, self._default_policy(settings.retry),
                settings.retention, call,
                ReplayEachStep if settings.replay_each_step else Execution, steps,
            )  # fmt: skip
        except JournalUnavailableError as exc:
            raise Outage(exc, None) from exc
        if isinstance(started, invocation.Busy):
            raise self._defer(started)
        if isinstance(started, invocation.Finished):
            if started.status in FINISHED:  # maybe failed at this start: its slot goes on
                concurrency.give_back(self.app, store, task_id, key, limit)
            if started.status == "paused":
                raise self._stay_paused(task_id)
            if started.status in ("replaced", "cancelled"):
                raise Ignore(f"invocation {task_id} was {started.status}")
            logger.info("%s[%s] is %s: returning its recorded outcome", self.name, task_id,
                        started.status)  # fmt: skip
            return invocation.finished_outcome(store, task_id, started, codec, settings.codec)

        ex = started
        delivery.take_over(ex, own_from)
        ex.task_name = self.name
        ex.passthrough = CONTROL_FLOW
        ex.max_value_bytes = settings.max_value_bytes
        ex.fingerprint = start.fingerprint
        ex.call = call
        if oversize is not None:
            self._fail_before_the_body(ex, store, settings, oversize)
        ex.host = CeleryHost(self.app, task_id, store, eager=not shared)
        # Only a journal other processes share needs its lease kept alive.
        lease = (
            KEEPER.hold(store, task_id, ex.fence, settings.lease_ttl, ex.heard_of_cancel)
            if shared
            else None
        )
        shield_from_autoretry(self)
        observer = ex.observer = observer_for(self)
        if observer is not None:
            observer.execution_started(ex)
        ended: BaseException | None = None
        token = current.set((ex, DurableContext(ex)))
        try:
            return self._run(ex, store, codec, settings, args, kwargs, (key, limit))
        except Paused as signal:  # a step's policy was exhausted: on_exhausted="pause"
            raise self._pause(ex, signal) from None
        except LeaseLost as lost:
            ex.ended = True
            logger.warning("%s[%s]: %s", self.name, ex.id, lost)
            raise Ignore(str(lost)) from None
        except BaseException as exc:
            ended = exc
            raise
        finally:
            current.reset(token)
            if lease is not None:
                KEEPER.drop(lease)
            if observer is not None:
                observer.execution_ended(ex, _failure(ended))

    def _run(
        self,
        ex: Execution,
        store: JournalStore,
        codec: Codec[Any],
        settings: DurableSettings,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        slot: tuple[str, int],
    ) -> Any:
        retention, steps = settings.retention, self._steps_retention(settings)
        try:
            try:
                if slot[0]:  # the body runs holding a slot of its concurrency key
                    concurrency.wait_for_slot(self.app, store, ex, *slot, settings.lease_ttl)
                value = self._run_body(args, kwargs)
                ex.drain()  # steps still running in threads are journaled before the end
            finally:
                ex.close()
            if ex.paused_by is not None:
                raise ex.paused_by  # the body swallowed it; the invocation stays paused
            if ex.ended:
                return value  # replaced in eager mode: the journal is the replacement's
            if must_replay(ex):  # async steps journaled: replay them once before the end
                raise AbandonExecution.of(ex, len(ex.entries) - 1)
            try:
                result = invocation.complete(store, ex, value, codec, retention, steps)
            except CodecError as exc:
                if type(exc) is not CodecError:
                    raise  # too large: plain Celery would have stored it
                raise ResultEncodeError(str(exc)) from exc.__cause__
            concurrency.give_back(self.app, store, ex.id, *slot)
            if ex.observer is not None:
                ex.observer.invocation_completed(ex, "completed", result, None)
            return result
        except Suspended as signal:
            raise self._suspend(ex, store, signal) from None
        except AbandonExecution:
            ex.drain()
            self._release(ex)
            raise
        except NOT_FINAL:
            self._release(ex)
            raise
        except JournalUnavailableError as exc:
            raise Outage(exc, ex) from exc
        except (JournalError, NonDeterminismError):
            raise
        except Exception as exc:
            try:
                ex.drain()
                if must_replay(ex):
                    self._release(ex)
                    raise AbandonExecution.of(ex, len(ex.entries) - 1) from exc
                status = invocation.fail(store, ex, exc, retention, steps)
            except JournalUnavailableError as outage:
                raise Outage(outage, ex) from exc
            concurrency.give_back(self.app, store, ex.id, *slot)
            if ex.observer is not None:
                ex.observer.invocation_completed(ex, status, None, exc)
            raise

    def _fail_before_the_body(
        self,
        ex: Execution,
        store: JournalStore,
        settings: DurableSettings,
        error: ValueTooLargeError,
    ) -> NoReturn:
        """Fail the invocation with ``error`` without running its body; it keeps no call.

        Raises:
            ValueTooLargeError: ``error``, once the failure is journaled.
        """
        try:
            invocation.fail(store, ex, error, settings.retention, self._steps_retention(settings))
        except JournalUnavailableError as outage:
            raise Outage(outage, ex) from error
        raise error

    def _run_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Escape as escape:
            error = escape.error
        finally:
            escaped.set(None)  # the autoretry wrapper is done with it: hold no traceback
        raise error  # outside the except block, so that its traceback stays its own

    # -- Options ------------------------------------------------------------------------

    def _default_policy(self, setting: RetryPolicy | None) -> RetryPolicy:
        if self.durable_retry is not None:
            return self.durable_retry
        if setting is not None:
            return setting
        # Built from the task's Celery options once, not at every execution.
        cached = self.__dict__.get("_durable_celery_policy")
        if cached is None:
            cached = self.__dict__["_durable_celery_policy"] = RetryPolicy.from_celery_options(self)
        return cached

    def _steps_retention(self, settings: DurableSettings) -> float:
        """This task's journal retention (``durable_journal_retention``), checked.

        Raises:
            ConfigurationError: the task's ``durable_journal_retention`` is wrong.
        """
        return settings.steps_retention(
            self.durable_journal_retention, f"{self.name}.durable_journal_retention"
        )

    def _codec(self, default: Codec[Any]) -> Codec[Any]:
        if self.durable_codec is None:
            return default
        return resolve_codec(self.durable_codec, f"{self.name}.durable_codec")


def _failure(exc: BaseException | None) -> BaseException | None:
    """What ended an execution, if it is a failure, not Celery's or our control flow."""
    if not isinstance(exc, Exception) or isinstance(exc, CONTROL_FLOW):
        return None
    return exc


#: Whether the eager ``apply()`` running now raises the task's errors to its caller.
_eager_throws: ContextVar[bool] = ContextVar("celery_durable_eager_throws", default=False)
