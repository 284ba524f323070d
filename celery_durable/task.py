"""``DurableTask``: a Celery task whose body replays from its journal on redelivery.

This module is the Celery glue: it picks the journal, starts an execution (one round
trip), runs the body, and maps what happens to Celery's own control flow: step
retries, deferrals of overlapping deliveries, outages, ``Task.replace`` and
``Task.retry`` with new arguments.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

from celery_durable import invocation
from celery_durable.children import CeleryHost
from celery_durable.codec import Codec, resolve_codec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.engine.lease import KEEPER
from celery_durable.errors import (
    ContextError,
    DurableError,
    JournalError,
    JournalUnavailableError,
    LeaseLost,
    NonDeterminismError,
    RetryableError,
    StepRetry,
    Suspended,
    TerminalError,
)
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.store import JournalStore, StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.runtime import Runtime, runtime_for
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.wakeups import encode_call

logger = logging.getLogger("celery_durable")

_current: ContextVar[tuple[Execution, DurableContext] | None] = ContextVar(
    "celery_durable_context", default=None
)
#: The execution whose own ``self.retry()`` is building its next message.
_retrying: ContextVar[Execution | None] = ContextVar("celery_durable_retrying", default=None)
#: The task id an eager ``Task.replace`` hands on, and the replacement's nesting.
_replacing: ContextVar[tuple[str, int] | None] = ContextVar(
    "celery_durable_replacing", default=None
)

#: Celery's control flow: it passes through a step untouched, and through the body
#: without finishing the invocation (the task runs again, or was handed elsewhere).
_CONTROL_FLOW = (SoftTimeLimitExceeded, Retry, Ignore, Reject)
_NOT_FINAL = (Retry, Ignore, Reject)

#: A message header: the fence of an execution that ended in an outage, unable to
#: release its lease. The next start treats that lease as released, not as a death.
ENDED_FENCE_HEADER = "durable_ended_fence"

#: How long a worker keeps trying to publish a retry while the broker refuses it,
#: before it gives the message back (requeue) instead of acknowledging it away.
PUBLISH_PATIENCE = 30.0


class DurableTask(Task):  # type: ignore[misc]
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
        current = _current.get()
        if current is None:
            raise ContextError(
                f"self.ctx of {self.name} was used outside a running invocation. "
                "It exists only while the task body runs (through a worker, apply(), or a "
                "direct call)."
            )
        execution, ctx = current
        execution.ensure_usable("self.ctx")
        return ctx

    # -- Sending ------------------------------------------------------------------------

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Arguments whose fingerprint would change between deliveries are refused here,
        # where the caller sees the error, not at every delivery in a worker.
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
        except _Outage as outage:
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
            except _EagerWait as wait:
                # No worker would wake an eager execution: wait for its timer here.
                time.sleep(wait.seconds)

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
        replacing = _replacing.get()
        nesting = int(request.get("replaced_task_nesting") or 0)
        if replacing is not None and replacing[0] == task_id:
            nesting = replacing[1]  # eager apply() does not carry the nesting: we do
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
            )  # fmt: skip
        except JournalUnavailableError as exc:
            raise _Outage(exc, None) from exc
        if isinstance(started, invocation.Busy):
            raise self._defer(started)
        if isinstance(started, invocation.Finished):
            if started.status in ("replaced", "cancelled"):
                raise Ignore(f"invocation {task_id} was {started.status}")
            logger.info("%s[%s] is %s: returning its recorded outcome", self.name, task_id,
                        started.status)  # fmt: skip
            return started.replay(codec)

        ex = started
        ex.passthrough = _CONTROL_FLOW
        ex.max_value_bytes = settings.max_value_bytes
        ex.fingerprint = start.fingerprint
        ex.call = call
        ex.host = CeleryHost(self.app, task_id, store, eager=not shared)
        # Only a journal other processes share needs its lease kept alive.
        lease = KEEPER.hold(store, task_id, ex.fence, settings.lease_ttl) if shared else None
        self._shield_durable_errors_from_autoretry()
        token = _current.set((ex, DurableContext(ex)))
        try:
            return self._run(ex, store, codec, settings.retention, args, kwargs)
        except LeaseLost as lost:
            ex.ended = True
            logger.warning("%s[%s]: %s", self.name, ex.id, lost)
            raise Ignore(str(lost)) from None
        finally:
            _current.reset(token)
            if lease is not None:
                KEEPER.drop(lease)

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
            return invocation.complete(store, ex, value, codec, retention)
        except Suspended as signal:
            raise self._suspend(ex, store, signal) from None
        except _NOT_FINAL:
            self._release(ex)
            raise
        except JournalUnavailableError as exc:
            raise _Outage(exc, ex) from exc
        except (JournalError, NonDeterminismError):
            raise
        except Exception as exc:
            try:
                ex.drain()
                invocation.fail(store, ex, exc, retention)
            except JournalUnavailableError as outage:
                raise _Outage(outage, ex) from exc
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

    # -- Ending an execution without finishing the invocation ---------------------------

    def _suspend(self, ex: Execution, store: JournalStore, signal: Suspended) -> BaseException:
        """End the execution until what it awaits completes: the error to raise for it."""
        ex.drain()
        awaiting = signal.awaiting
        outside = [a["index"] for a in awaiting if a["kind"] != "sleep"]
        wake_at = min((a["until"] for a in awaiting if a["kind"] == "sleep"), default=0.0)
        eager = self.request.is_eager or self.request.called_directly
        if eager and outside:
            names = ", ".join(f"{a['kind']} {a['name']!r}" for a in awaiting)
            return ContextError(
                f"invocation {ex.id} waits for {names}, and an eager execution (apply(), "
                "task_always_eager, a direct call) has no worker to wake it. Complete "
                "awakeables before waiting for them, or run the task on a worker."
            )
        ex.ended = True
        state = store.suspend(
            ex.id, ex.fence, json.dumps(awaiting), outside, wake_at, ex.call()
        )  # fmt: skip
        if eager:
            return _EagerWait(0.0 if state == "ready" else max(0.0, wake_at - time.time()))
        if state == "ready":  # it completed while this execution wound down: go on now
            retry: BaseException = self.retry(countdown=0, max_retries=sys.maxsize)
            return retry
        what = ", ".join(f"{a['kind']} {a['name']!r}" for a in awaiting)
        logger.info("%s[%s] suspended, waiting for %s", self.name, ex.id, what)
        suspended: BaseException = Ignore(f"suspended, waiting for {what}")
        return suspended

    def _call(self) -> str:
        """The JSON that re-publishes this invocation: task, arguments, options."""
        sig = super().signature_from_request(self.request)
        return encode_call(self.name, sig.args, sig.kwargs, sig.options)

    def _release(self, ex: Execution, fingerprint: str = "") -> None:
        """End the execution cleanly: the next delivery starts at once, not as a death."""
        if ex.ended:
            return
        ex.ended = True
        try:
            ex.store.release(ex.id, ex.fence, fingerprint)
        except JournalUnavailableError as exc:
            # The lease runs out by itself; the next start counts a death at worst.
            logger.warning("%s[%s]: could not release its lease: %s", self.name, ex.id, exc)

    def _defer(self, busy: invocation.Busy) -> Retry:
        """Come back when the execution that holds the lease would have lost it."""
        if self.request.is_eager or self.request.called_directly:
            raise ContextError(
                f"invocation {self.request.id} is already running in this process "
                f"({busy.holder}); an eager or direct call cannot wait for it."
            )
        countdown = busy.seconds + 0.1
        logger.info(
            "%s[%s] is running in %s: this delivery waits %.1f s for its lease",
            self.name, self.request.id, busy.holder, countdown,
        )  # fmt: skip
        message = f"another execution ({busy.holder}) holds the invocation; deferred"
        retry: Retry = self.retry(
            exc=RetryableError(message), countdown=countdown, max_retries=sys.maxsize
        )
        return retry

    def _retry_until_redis_is_back(self, outage: _Outage) -> Retry:
        # A journal outage is nobody's fault in the task: never give up on it, and never
        # let it fail the task, which would ack the message and lose the invocation.
        countdown = min(2 ** min(self.request.retries, 6), 60)
        logger.warning(
            "%s[%s]: %s Retrying in %s s.", self.name, self.request.id, outage.error, countdown
        )
        headers = dict(self.request.headers or {})
        if outage.execution is not None and not outage.execution.ended:
            headers[ENDED_FENCE_HEADER] = outage.execution.fence
        retry: Retry = self.retry(
            exc=outage.error, countdown=countdown, max_retries=sys.maxsize, headers=headers
        )
        return retry

    # -- Celery's own retry and replace, from inside a running execution ----------------

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``Task.retry``. From the running execution it releases the lease,
        and new ``args``/``kwargs`` carry the invocation on with them.

        A retry that cannot be published (the broker refuses writes) is tried again for
        a while; then the message is given back to the broker (``Reject(requeue=True)``)
        rather than acknowledged away, as Celery would.
        """
        current = _current.get()
        mine = current[0] if current is not None and current[0].id == self.request.id else None
        token = _retrying.set(mine if mine is not None and not mine.ended else None)
        try:
            deadline, pause = time.monotonic() + PUBLISH_PATIENCE, 0.5
            while True:
                try:
                    return super().retry(
                        args, kwargs, exc, throw, eta, countdown, max_retries, **options
                    )
                except Reject as rejected:
                    if rejected.requeue or time.monotonic() > deadline:
                        raise Reject(rejected.reason, requeue=True) from rejected
                    logger.warning(
                        "%s[%s]: could not publish its retry (%s); trying again in %.1f s",
                        self.name, self.request.id, rejected.reason, pause,
                    )  # fmt: skip
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            _retrying.reset(token)

    def signature_from_request(
        self, request: Any = None, args: Any = None, kwargs: Any = None, queue: Any = None,
        **extra_options: Any,
    ) -> Any:  # fmt: skip
        signature = super().signature_from_request(request, args, kwargs, queue, **extra_options)
        ex = _retrying.get()
        if ex is not None:
            # The retry's message is built and about to be published: release the lease
            # now, so that it starts at once; new arguments become the invocation's own.
            _retrying.set(None)
            new = fingerprint(signature.args or (), signature.kwargs or {})
            self._release(ex, new if new != ex.fingerprint else "")
        return signature

    def on_replace(self, sig: Any) -> Any:
        """Celery's hook of ``Task.replace``: the invocation ends as ``replaced`` and hands
        its task id to the replacement, which starts a journal of its own."""
        current = _current.get()
        nesting = int(self.request.get("replaced_task_nesting") or 0)
        if current is not None and current[0].id == self.request.id and not current[0].ended:
            ex = current[0]
            ex.drain()
            ex.ended = True
            ex.close()
            retention = runtime_for(self.app).settings.retention
            ex.store.finish(ex.id, ex.fence, "replaced", "", retention, nesting)
        token = _replacing.set((self.request.id, nesting + 1))
        try:
            return super().on_replace(sig)
        finally:
            _replacing.reset(token)

    # -- Options ------------------------------------------------------------------------

    def _default_policy(self, setting: RetryPolicy | None) -> RetryPolicy:
        if self.durable_retry is not None:
            return self.durable_retry
        if setting is not None:
            return setting
        return RetryPolicy.from_celery_options(self)

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


def holder_id() -> str:
    """Who holds a lease: this host and process, so that a worker can tell a dead child."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Escape(BaseException):
    """Carries one of our errors past Celery's autoretry wrapper, which catches Exception."""

    def __init__(self, error: DurableError) -> None:
        super().__init__(str(error))
        self.error = error


class _EagerWait(BaseException):
    """Ends an eager execution that waits for a timer: it runs again after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"waiting {seconds:.3g} s")
        self.seconds = seconds


class _Outage(BaseException):
    """Carries a journal outage out of an execution, with the execution if it started."""

    def __init__(self, error: JournalUnavailableError, execution: Execution | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.execution = execution
