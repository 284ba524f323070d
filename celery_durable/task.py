"""``DurableTask``: a Celery task whose body replays from its journal on redelivery."""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from celery_durable import invocation
from celery_durable.codec import Codec, resolve_codec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import (
    ContextError,
    DurableError,
    InvocationConflictError,
    JournalError,
    JournalUnavailableError,
    NonDeterminismError,
    RetryableError,
    StepRetry,
    TerminalError,
)
from celery_durable.journal.store import JournalStore
from celery_durable.policy import RetryPolicy
from celery_durable.runtime import runtime_for
from celery_durable.stores.memory import MemoryJournalStore

logger = logging.getLogger("celery_durable")

_current: ContextVar[tuple[Execution, DurableContext] | None] = ContextVar(
    "celery_durable_context", default=None
)

#: Raised through the body without finishing the invocation: Celery's own control
#: flow (the task will run again or was handed elsewhere), and errors that say the
#: journal must stay as it is (someone else's, paused, or unreachable).
_NOT_FINAL = (Retry, Ignore, Reject, JournalError, NonDeterminismError, InvocationConflictError)


class DurableTask(Task):  # type: ignore[misc]
    """A Celery task with a durable context, ``self.ctx``.

    Late acknowledgement and ``reject_on_worker_lost`` are on, because a message
    that comes back after a crash is what lets the journal resume the work.
    """

    acks_late = True
    reject_on_worker_lost = True
    #: A terminal error means "do not retry": ``autoretry_for`` must not retry it.
    dont_autoretry_for: tuple[type[BaseException], ...] = (TerminalError,)

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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._execute(args, kwargs)
        except StepRetry as signal:
            # Celery's max_retries must never cut a step's own policy short.
            exc = signal.error or RetryableError(str(signal))
            raise self.retry(exc=exc, countdown=signal.countdown, max_retries=sys.maxsize) from None
        except JournalUnavailableError as exc:
            if self.request.is_eager or self.request.called_directly:
                raise  # nobody would redeliver it: the caller sees the outage
            raise self._retry_until_redis_is_back(exc) from exc

    def _execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one execution: replay the journal, run what is new, record the outcome."""
        runtime = runtime_for(self.app)
        codec = self._codec(runtime.settings.codec)
        policy = self._default_policy(runtime.settings.retry)
        store: JournalStore = runtime.store
        task_id = self.request.id
        if self.request.called_directly:
            # Called as a plain function: nothing will deliver it again, so its journal
            # lives in memory for this call only, and Redis keeps nothing of it.
            store, task_id = MemoryJournalStore(), str(uuid.uuid4())
        started = invocation.begin(
            store, task_id, self.name, args, kwargs, codec, policy, self.request.retries or 0
        )
        if isinstance(started, invocation.Finished):
            logger.info("%s[%s] is %s: returning its recorded outcome", self.name, task_id,
                        started.status)  # fmt: skip
            return started.replay(codec)

        self._shield_durable_errors_from_autoretry()
        retention = runtime.settings.retention
        token = _current.set((started, DurableContext(started)))
        try:
            try:
                value = self._run_body(args, kwargs)
            finally:
                started.close()
            if started.paused_by is not None:
                raise started.paused_by  # the body swallowed it; the invocation stays paused
            return invocation.complete(store, started, value, codec, retention)
        except _NOT_FINAL:
            raise
        except Exception as exc:
            invocation.fail(store, started, exc, retention)
            raise
        finally:
            _current.reset(token)

    def _run_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except _Escape as escape:
            error = escape.error
        raise error  # outside the except block, so that its traceback stays its own

    def _default_policy(self, setting: RetryPolicy | None) -> RetryPolicy:
        if self.durable_retry is not None:
            return self.durable_retry
        if setting is not None:
            return setting
        return RetryPolicy.from_celery_options(self)

    def _shield_durable_errors_from_autoretry(self) -> None:
        # Celery's autoretry wrapper catches what the task's autoretry_for names, often
        # Exception, minus the dont_autoretry_for it was declared with. Our errors must
        # not be retried that way: a TerminalError means "do not retry", the others need
        # their own handling (pause, refuse, retry until Redis is back). Carry them past.
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

    def _retry_until_redis_is_back(self, exc: JournalUnavailableError) -> Retry:
        # A journal outage is nobody's fault in the task: never give up on it, and never
        # let it fail the task, which would ack the message and lose the invocation.
        countdown = min(2 ** min(self.request.retries, 6), 60)
        logger.warning("%s[%s]: %s Retrying in %s s.", self.name, self.request.id, exc, countdown)
        retry: Retry = self.retry(exc=exc, countdown=countdown, max_retries=sys.maxsize)
        return retry

    def _codec(self, default: Codec[Any]) -> Codec[Any]:
        if self.durable_codec is None:
            return default
        return resolve_codec(self.durable_codec, f"{self.name}.durable_codec")


class _Escape(BaseException):
    """Carries one of our errors past Celery's autoretry wrapper, which catches Exception."""

    def __init__(self, error: DurableError) -> None:
        super().__init__(str(error))
        self.error = error
