"""``DurableTask``: a Celery task whose body replays from its journal on redelivery.

This module is the Celery glue of one execution: it picks the journal, starts the
execution (one round trip), runs the body and records its outcome. How an execution
that stops early maps onto Celery's control flow (retries, deferrals, outages,
suspension, ``Task.replace``) is in ``flow``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from typing import Any

from celery.exceptions import Ignore

from celery_durable import invocation
from celery_durable.children import CeleryHost
from celery_durable.codec import Codec, resolve_codec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.engine.lease import KEEPER
from celery_durable.engine.replay_each_step import AbandonExecution, ReplayEachStep, must_replay
from celery_durable.errors import (
    ContextError,
    DurableError,
    JournalError,
    JournalUnavailableError,
    LeaseLost,
    NonDeterminismError,
    Paused,
    RetryableError,
    StepRetry,
    Suspended,
    TerminalError,
)
from celery_durable.fingerprint import fingerprint
from celery_durable.flow import (
    CONTROL_FLOW,
    ENDED_FENCE_HEADER,
    NOT_FINAL,
    CeleryFlow,
    EagerWait,
    Outage,
    current,
    replacing,
    retrying,
)
from celery_durable.journal.store import JournalStore, StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.runtime import Runtime, runtime_for
from celery_durable.signals import observer_for
from celery_durable.stores.memory import MemoryJournalStore

logger = logging.getLogger("celery_durable")


class DurableTask(CeleryFlow):
    """A Celery task with a durable context, ``self.ctx``.

    Late acknowledgement and ``reject_on_worker_lost`` are on, because a message
    that comes back after a crash is what lets the journal resume the work.
    """

    acks_late = True
    reject_on_worker_lost = True
    #: A terminal error means "do not retry": ``autoretry_for`` must not retry it.
    dont_autoretry_for: tuple[type[BaseException], ...] = (TerminalError,)
    #: The worker-side request: it finishes the journal of a task killed by a hard time
    #: limit, and frees the lease of a pool child that died.
    Request = "celery_durable.worker:DurableRequest"

    #: Codec of step values and of the result when a step names none; a codec name
    #: or object. None means the app's ``durable_codec`` setting.
    durable_codec: str | Codec[Any] | None = None

    #: Retry policy of steps that name none. None means the app's ``durable_retry``
    #: setting, else the policy this task's Celery retry options describe.
    durable_retry: RetryPolicy | None = None

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
        return super().apply_async(args, kwargs, **options)

    # -- One execution ------------------------------------------------------------------

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
        store, task_id, shared = self._journal(runtime)
        while True:
            try:
                return self._execute_once(runtime, store, task_id, shared, args, kwargs)
            except EagerWait as wait:
                # No worker would wake an eager execution: wait for its timer here.
                time.sleep(wait.seconds)
            except AbandonExecution:
                # durable_replay_each_step: deliver it again, to replay what it journaled.
                if not (self.request.is_eager or self.request.called_directly):
                    raise self.retry(countdown=0, max_retries=sys.maxsize) from None

    def _execute_once(
        self,
        runtime: Runtime,
        store: JournalStore,
        task_id: str,
        shared: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        settings = runtime.settings
        codec = self._codec(settings.codec)
        request = self.request
        replaced = replacing.get()
        nesting = int(request.get("replaced_task_nesting") or 0)
        if replaced is not None and replaced[0] == task_id:
            nesting = replaced[1]  # eager apply() does not carry the nesting: we do
        start = StartRequest(
            task_name=self.name,
            fingerprint=fingerprint(args, kwargs),
            seed=int.from_bytes(os.urandom(8), "little"),
            lease_ttl=settings.lease_ttl,
            holder=holder_id(),
            nesting=nesting,
            ended_fence=int(request.get(ENDED_FENCE_HEADER) or 0),
        )
        call = self._call if shared else str
        try:
            started = invocation.begin(
                store, task_id, start, codec, self._default_policy(settings.retry),
                settings.retention, call,
                ReplayEachStep if settings.replay_each_step else Execution,
            )  # fmt: skip
        except JournalUnavailableError as exc:
            raise Outage(exc, None) from exc
        if isinstance(started, invocation.Busy):
            raise self._defer(started)
        if isinstance(started, invocation.Finished):
            if started.status in ("replaced", "cancelled", "paused"):
                raise Ignore(f"invocation {task_id} was {started.status}")
            logger.info("%s[%s] is %s: returning its recorded outcome", self.name, task_id,
                        started.status)  # fmt: skip
            return invocation.finished_outcome(store, task_id, started, codec, settings.codec)

        ex = started
        ex.passthrough = CONTROL_FLOW
        ex.max_value_bytes = settings.max_value_bytes
        ex.fingerprint = start.fingerprint
        ex.call = call
        ex.host = CeleryHost(self.app, task_id, store, eager=not shared)
        # Only a journal other processes share needs its lease kept alive.
        lease = KEEPER.hold(store, task_id, ex.fence, settings.lease_ttl) if shared else None
        self._shield_durable_errors_from_autoretry()
        observer = ex.observer = observer_for(self)
        if observer is not None:
            observer.execution_started(ex)
        ended: BaseException | None = None
        token = current.set((ex, DurableContext(ex)))
        try:
            return self._run(ex, store, codec, settings.retention, args, kwargs)
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
        retention: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            try:
                value = self._run_body(args, kwargs)
                ex.drain()  # steps still running in threads are journaled before the end
            finally:
                ex.close()
            if ex.paused_by is not None:
                raise ex.paused_by  # the body swallowed it; the invocation stays paused
            if ex.ended:
                return value  # replaced in eager mode: the journal is the replacement's
            if must_replay(ex):  # async steps journaled: replay them once before the end
                raise AbandonExecution(ex.id, len(ex.entries) - 1)
            result = invocation.complete(store, ex, value, codec, retention)
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
                    raise AbandonExecution(ex.id, len(ex.entries) - 1) from exc
                invocation.fail(store, ex, exc, retention)
            except JournalUnavailableError as outage:
                raise Outage(outage, ex) from exc
            if ex.observer is not None:
                ex.observer.invocation_completed(ex, "failed", None, exc)
            raise

    def _run_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except _Escape as escape:
            error = escape.error
        raise error  # outside the except block, so that its traceback stays its own

    def _journal(self, runtime: Runtime) -> tuple[JournalStore, str, bool]:
        """The store of this delivery's journal, the invocation's id there, and whether
        other processes share that store."""
        request = self.request
        if request.called_directly:
            # Called as a plain function: nothing will deliver it again, so its journal
            # lives in memory for this call only.
            return MemoryJournalStore(), str(uuid.uuid4()), False
        if request.is_eager and runtime.settings.eager_journal == "memory":
            return runtime.eager_store, request.id, False
        return runtime.store, request.id, True

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

    def _codec(self, default: Codec[Any]) -> Codec[Any]:
        if self.durable_codec is None:
            return default
        return resolve_codec(self.durable_codec, f"{self.name}.durable_codec")

    def _shield_durable_errors_from_autoretry(self) -> None:
        # Celery's autoretry wrapper catches what the task's autoretry_for names, often
        # Exception, minus the dont_autoretry_for it was declared with. Our errors must
        # not be retried that way: a step failure was already judged by the step's policy
        # (which is autoretry_for), the others need their own handling (pause, refuse,
        # retry until Redis is back). Carry them past.
        run = self.__dict__.get("_orig_run")
        if run is None or getattr(run, "_durable_shielded", False):
            return

        def shielded(*args: Any, **kwargs: Any) -> Any:
            try:
                return run(*args, **kwargs)
            except RetryableError:
                raise
            except DurableError as exc:
                raise _Escape(exc) from exc

        shielded._durable_shielded = True  # type: ignore[attr-defined]
        self._orig_run = shielded


def _failure(exc: BaseException | None) -> BaseException | None:
    """What ended an execution, if it is a failure, not Celery's or our control flow."""
    if not isinstance(exc, Exception) or isinstance(exc, CONTROL_FLOW):
        return None
    return exc


def holder_id() -> str:
    """Who holds a lease: this host and process, so that a worker can tell a dead child."""
    pid = os.getpid()
    if _holder[0] != pid:  # a name lookup per execution would be a system call each
        _holder[:] = [pid, f"{socket.gethostname()}:{pid}"]
    return str(_holder[1])


_holder: list[Any] = [0, ""]


class _Escape(BaseException):
    """Carries one of our errors past Celery's autoretry wrapper, which catches Exception."""

    def __init__(self, error: DurableError) -> None:
        super().__init__(str(error))
        self.error = error
