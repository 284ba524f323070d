"""How a durable execution ends without finishing its invocation, the Celery way.

``CeleryFlow`` is the base of ``DurableTask``. It maps the ways an execution stops
early onto Celery's own control flow: a retry of a step, a deferral of a delivery
that found the lease held, a retry until the journal's Redis is back, a suspension
(Celery's ``Ignore``), ``Task.retry`` and ``Task.replace`` called by the body. Where
Celery would acknowledge a message away (a retry it cannot publish), it requeues.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.worker import state as worker_state

from celery_durable import concurrency, invocation
from celery_durable.celery_errors import escaped
from celery_durable.context import DurableContext
from celery_durable.engine import reopen
from celery_durable.engine.execution import Execution
from celery_durable.errors import (
    CodecError,
    ContextError,
    JournalUnavailableError,
    Paused,
    RetryableError,
    Suspended,
)
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.failures import StepFailure
from celery_durable.journal.store import Cancelling, JournalStore, Reopening
from celery_durable.runtime import runtime_for
from celery_durable.wakeups import encode_call

logger = logging.getLogger("celery_durable")

current: ContextVar[tuple[Execution, DurableContext] | None] = ContextVar(
    "celery_durable_context", default=None
)
#: The execution whose own ``self.retry()`` is building its next message.
retrying: ContextVar[Execution | None] = ContextVar("celery_durable_retrying", default=None)
#: What the body's ``self.retry()`` re-opens, with the release of its lease.
reopening: ContextVar[Reopening | None] = ContextVar("celery_durable_reopening", default=None)
#: The task id an eager ``Task.replace`` hands on, and the replacement's nesting.
replacing: ContextVar[tuple[str, int] | None] = ContextVar("celery_durable_replacing", default=None)

#: Celery's control flow: it passes through a step untouched, and through the body
#: without finishing the invocation (the task runs again, or was handed elsewhere).
CONTROL_FLOW = (SoftTimeLimitExceeded, Retry, Ignore, Reject)
NOT_FINAL = (Retry, Ignore, Reject)

#: A message header: the fence of an execution that ended in an outage, unable to
#: release its lease. The next start treats that lease as released, not as a death.
ENDED_FENCE_HEADER = "durable_ended_fence"

#: A message header, ``<fence>:<index>``: the execution with that fence journaled the
#: entries from that index on and ended without acting on them (``durable_replay_each_step``
#: abandoned it). The next execution counts them as its own: a retry of its body may
#: re-open them.
OWN_FROM_HEADER = "durable_own_from"

#: Longest pause between two tries to publish a retry the broker refuses, seconds.
PUBLISH_PAUSE = 5.0


class CeleryFlow(Task):  # type: ignore[misc]
    """Celery's control flow for durable executions; see the module docstring."""

    def _suspend(self, ex: Execution, store: JournalStore, signal: Suspended) -> BaseException:
        """End the execution until what it awaits completes: the error to raise for it."""
        ex.drain()
        awaiting = signal.awaiting
        outside = [a["index"] for a in awaiting if a["kind"] != "sleep"]
        # A timer's due time; a waiter for a concurrency slot's time to look again.
        wake_at = min((a["until"] for a in awaiting if "until" in a), default=0.0)
        eager = self.request.is_eager or self.request.called_directly
        ex.ended = True
        state = store.suspend(
            ex.id, ex.fence, json.dumps(awaiting), outside, wake_at, ex.call(),
            cancellable=not ex.cancel_raised,
        )  # fmt: skip
        if eager and outside and state != "ready":
            # Completed while the body ran (ready), it goes on below; else nothing would.
            names = ", ".join(f"{a['kind']} {a['name']!r}" for a in awaiting)
            return ContextError(
                f"invocation {ex.id} waits for {names}, and an eager execution (apply(), "
                "task_always_eager, a direct call) has no worker to wake it. Complete "
                "awakeables before waiting for them, or run the task on a worker."
            )
        if state == "suspended" and ex.observer is not None:
            ex.observer.invocation_suspended(ex, awaiting)
        if eager:
            return EagerWait(0.0 if state == "ready" else max(0.0, wake_at - time.time()))
        if state == "ready":  # it completed while this execution wound down: go on now
            retry: BaseException = self.retry(countdown=0, max_retries=sys.maxsize)
            return retry
        what = ", ".join(f"{a['kind']} {a['name']!r}" for a in awaiting)
        logger.info("%s[%s] suspended, waiting for %s", self.name, ex.id, what)
        suspended: BaseException = Ignore(f"suspended, waiting for {what}")
        return suspended

    def _call(self) -> str:
        """The JSON that re-publishes this invocation: task, arguments, options.

        Raises:
            CodecError: JSON cannot hold the arguments (a message serialized by pickle).
        """
        sig = super().signature_from_request(self.request)
        try:
            return encode_call(self.name, sig.args, sig.kwargs, sig.options)
        except TypeError as exc:
            raise CodecError(
                f"{self.name}[{self.request.id}] cannot run as a durable invocation: its "
                f"call must be stored as JSON, to publish it again (wake-ups, recovery of a "
                f"lost message, resume), and {exc}. Pass arguments that Celery's json "
                "serializer takes (a list for a set, a dict for an object)."
            ) from exc

    def _release(
        self,
        ex: Execution,
        fingerprint: str = "",
        retry_in: float = 0.0,
        call: str = "",
        reopen: Reopening | None = None,
    ) -> bool:
        """End the execution cleanly: the next delivery starts at once, not as a death.

        It is due in ``retry_in`` seconds; ``fingerprint`` and ``call`` are those of new
        arguments, if the retry changed them. ``reopen`` drops the journal's last entries
        in the same write (Celery's retry idiom, ``engine.reopen``). Returns True when the
        invocation was cancelled and the execution had raised no cancel: its next
        delivery should come at once, to raise it.
        """
        if ex.ended:
            return False
        ex.drain()  # async steps still running commit under this lease, not after it
        try:
            released = ex.store.release(
                ex.id, ex.fence, fingerprint, retry_in, call, reopen, not ex.cancel_raised
            )
        except JournalUnavailableError as exc:
            # Tried again with the retry's next publish; else the lease runs out by itself
            # and the next start counts a death at worst (and replays what it would
            # have re-opened).
            logger.warning("%s[%s]: could not release its lease: %s", self.name, ex.id, exc)
            return False
        ex.ended = True
        if reopen is not None:
            logger.info(
                "%s[%s]: the retry re-opens journal entries from index %d: they run again",
                self.name, ex.id, reopen.start,
            )  # fmt: skip
        return isinstance(released, Cancelling)

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

    def _retry_until_redis_is_back(self, outage: Outage) -> Retry:
        # A journal outage is nobody's fault in the task: never give up on it, and never
        # let it fail the task, which would ack the message and lose the invocation.
        countdown = min(2 ** min(self.request.retries, 6), 60)
        logger.warning(
            "%s[%s]: %s Retrying in %s s.", self.name, self.request.id, outage.error, countdown
        )
        headers = dict(self.request.headers or {})
        if outage.execution is not None and not outage.execution.ended:
            headers[ENDED_FENCE_HEADER] = outage.execution.fence
        # The retry's publish tries again to release the lease, as Redis comes back.
        token = retrying.set(outage.execution)
        try:
            retry: Retry = self.retry(
                exc=outage.error, countdown=countdown, max_retries=sys.maxsize, headers=headers
            )
        finally:
            retrying.reset(token)
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
        and new ``args``/``kwargs`` carry the invocation on with them. From the body,
        the release re-opens the step the retry follows, so that it runs again
        (``engine.reopen``).

        A retry that cannot be published (the broker refuses writes) is tried again, with
        a growing pause, until the broker takes it, where Celery would acknowledge the
        message away (``Reject(requeue=False)``). Giving it back to a broker that refuses
        writes would fail too, so it is given back (``Reject(requeue=True)``) only when
        the worker shuts down. Each try also tries again to release the lease.
        """
        running = current.get()
        mine = running[0] if running is not None and running[0].id == self.request.id else None
        token = retrying.set(mine or retrying.get())
        reopens = reopening.set(
            self._reopening(mine, exc, max_retries) if mine is not None else None
        )  # fmt: skip
        had_override = hasattr(self, "override_max_retries")
        try:
            pause = 0.5
            while True:
                try:
                    return super().retry(
                        args, kwargs, exc, throw, eta, countdown, max_retries, **options
                    )
                except Reject as rejected:
                    stopping = worker_state.should_stop or worker_state.should_terminate
                    if rejected.requeue or stopping:
                        raise Reject(rejected.reason, requeue=True) from rejected
                    logger.warning(
                        "%s[%s]: could not publish its retry (%s); trying again in %.1f s",
                        self.name, self.request.id, rejected.reason, pause,
                    )  # fmt: skip
                    time.sleep(pause)
                    pause = min(pause * 2, PUBLISH_PAUSE)
        finally:
            reopening.reset(reopens)
            retrying.reset(token)
            if max_retries == sys.maxsize and not had_override:
                # Celery keeps max_retries on the task object for its autoretry wrapper:
                # ours (a step's policy, a deferral, an outage) must not leak into a later
                # autoretry of this task in the process, which would never give up.
                self.__dict__.pop("override_max_retries", None)

    def _reopening(
        self, ex: Execution, exc: BaseException | None, max_retries: int | None
    ) -> Reopening | None:
        """What the body's retry re-opens (``engine.reopen``), if it will be published."""
        request = self.request
        if ex.ended or ex.in_step is not None or request.called_directly:
            return None  # Celery's retry from inside a step, or ours, or a direct call
        if exc is not None and exc is escaped.get():
            escaped.set(None)
            if not isinstance(exc, StepFailure):
                # autoretry_for caught an error of the body's own, not of the step
                # before it: that step stays done (a charge must not run twice).
                return None
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries + 1 > limit:
            return None  # the retry raises instead: the task fails with the journal as it is
        ex.drain()  # its async steps are journaled before it looks at the last entry
        return reopen.plan(ex)

    def signature_from_request(
        self, request: Any = None, args: Any = None, kwargs: Any = None, queue: Any = None,
        **extra_options: Any,
    ) -> Any:  # fmt: skip
        signature = super().signature_from_request(request, args, kwargs, queue, **extra_options)
        ex = retrying.get()
        if ex is not None and not ex.ended:
            # The retry's message is built and about to be published: release the lease
            # now, so that it starts at once; new arguments become the invocation's own.
            new = fingerprint(signature.args or (), signature.kwargs or {})
            retry_in = _seconds_until(extra_options.get("eta"), extra_options.get("countdown"))
            if new == ex.fingerprint:
                cancelled = self._release(ex, "", retry_in, reopen=reopening.get())
            else:
                options = signature.options
                call = encode_call(self.name, signature.args, signature.kwargs, options)
                cancelled = self._release(ex, new, retry_in, call, reopening.get())
            if cancelled:  # it runs at once, to raise the cancel, not after the countdown
                signature.options.pop("eta", None)
                signature.options["countdown"] = 0
        return signature

    def on_replace(self, sig: Any) -> Any:
        """Celery's hook of ``Task.replace``: the invocation ends as ``replaced`` and hands
        its task id to the replacement, which starts a journal of its own."""
        running = current.get()
        nesting = int(self.request.get("replaced_task_nesting") or 0)
        if running is not None and running[0].id == self.request.id and not running[0].ended:
            ex = running[0]
            ex.drain()
            ex.ended = True
            ex.close()
            retention = runtime_for(self.app).settings.retention
            ex.store.finish(ex.id, ex.fence, "replaced", "", retention, nesting)
            # Its concurrency slot goes on: the replacement asks for its own, if it has a key.
            key, limit = concurrency.concurrency_of(self, tuple(self.request.args or ()),
                                                    dict(self.request.kwargs or {}))  # fmt: skip
            concurrency.give_back(self.app, ex.store, ex.id, key, limit)
        token = replacing.set((self.request.id, nesting + 1))
        try:
            return super().on_replace(sig)
        finally:
            replacing.reset(token)

    def _pause(self, ex: Execution, signal: Paused) -> BaseException:
        """End an execution whose step paused the invocation: the error to raise for it.

        The invocation is paused already (``Execution.pause``); the message is
        acknowledged and no result state is written, as for a suspension, until an
        operator resumes it.
        """
        ex.drain()
        logger.warning("%s[%s] paused: %s", self.name, ex.id, signal.reason)
        paused: BaseException = Ignore(f"paused: {signal.reason}")
        return paused

    def _stay_paused(self, task_id: str) -> BaseException:
        """End a delivery of a paused invocation: the error to raise for it.

        Paused means paused: a duplicate publish, a restored message or a retry in
        flight runs nothing. Only an operator moves it on. The message is acknowledged
        and no result state is written.
        """
        command = f"celery -A {self.app.main or '<your app>'} durable resume {task_id}"
        logger.info(
            "%s[%s] is paused: this delivery runs nothing. Once the cause is fixed, resume "
            "it with `%s`.", self.name, task_id, command,
        )  # fmt: skip
        paused: BaseException = Ignore(f"invocation {task_id} is paused; resume it with {command}")
        return paused


def _seconds_until(eta: Any, countdown: Any) -> float:
    """Seconds until a retry published with ``eta`` or ``countdown`` is due."""
    if eta is not None:
        if isinstance(eta, str):
            eta = datetime.fromisoformat(eta)
        if isinstance(eta, datetime):
            now = datetime.now(eta.tzinfo or UTC).replace(tzinfo=eta.tzinfo)
            return max(0.0, (eta - now).total_seconds())
    if isinstance(countdown, int | float):
        return max(0.0, float(countdown))
    return 0.0


class EagerWait(BaseException):
    """Ends an eager execution that waits for a timer: it runs again after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"waiting {seconds:.3g} s")
        self.seconds = seconds


class Outage(BaseException):
    """Carries a journal outage out of an execution, with the execution if it started."""

    def __init__(self, error: JournalUnavailableError, execution: Execution | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.execution = execution
