"""Child calls on Celery: publishing a child, and bringing its outcome home.

``ctx.call(sig)`` publishes ``sig`` under a task id derived from the parent's, with a
``link`` to ``celery_durable.child_succeeded`` and a ``link_error`` to
``celery_durable.child_failed``. Those record the outcome in the parent's
completions and wake the parent if it is suspended, for a DurableTask child and a
plain one alike. An eager parent runs its child in process and records the outcome
at once.

The callbacks carry the call's secret token (journaled with the call, and in no
other message): an outcome is recorded only with it, so publishing
``celery_durable.child_outcome`` with a guessed parent and index records nothing.
An outcome that is not one (``journal.entries.read_completion``) is refused too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, current_app, shared_task
from celery.canvas import Signature, _chain, chord, group

from celery_durable import cancelling
from celery_durable.codec import PLAIN_JSON
from celery_durable.engine.calls import child_id
from celery_durable.errors import ContextError, JournalUnavailableError
from celery_durable.journal.entries import Unreadable, encode_completion, read_completion
from celery_durable.journal.failures import record_of
from celery_durable.journal.store import JournalStore
from celery_durable.runtime import runtime_for
from celery_durable.wakeups import publish_due

logger = logging.getLogger("celery_durable")

#: A message header: the deadline a parent gave its child, ``ctx.call(sig, timeout=...)``.
TIMEOUT_HEADER = "durable_timeout"


class CeleryHost:
    """Starts the children of one execution (``engine.host.Host``)."""

    def __init__(self, app: Any, parent_id: str, store: JournalStore, eager: bool) -> None:
        self._app = app
        self._parent = parent_id
        self._store = store
        self._eager = eager

    def describe_call(self, signature: Any, timeout: float | None = None) -> str:
        if not isinstance(signature, Signature) or isinstance(signature, _chain | group | chord):
            raise ContextError(
                f"ctx.call() takes the signature of one task, such as add.s(2, 2), not "
                f"{signature!r}. Call a chain, group or chord from a plain task, and call that."
            )
        task = self._app.tasks.get(signature.task)
        if timeout is not None and task is not None and not hasattr(task, "durable_timeout"):
            raise ContextError(
                f"ctx.call({signature.task!r}, timeout={timeout!r}): only a DurableTask child "
                "has a deadline; a plain task has Celery's time_limit and expires instead."
            )
        return str(signature.task)

    def publish_call(
        self, signature: Any, child: str, index: int, token: str, timeout: float | None = None
    ) -> bool:
        sig = signature.clone()
        if self._eager:
            result = sig.apply(task_id=child)
            outcome = _success(result.result) if result.successful() else _failure(result.result)
            record_outcome(self._app, self._store, self._parent, index, outcome, token)
            return True
        where = {"parent": self._parent, "index": index, "token": token}
        sig.link(self._app.signature("celery_durable.child_succeeded", kwargs=where))
        sig.link_error(self._app.signature(cancelling.CHILD_FAILED, kwargs=where))
        if timeout is not None:
            headers = {**(sig.options.get("headers") or {}), TIMEOUT_HEADER: timeout}
            sig.apply_async(task_id=child, headers=headers)
        else:
            sig.apply_async(task_id=child)
        return False

    def cancel_children(self, children: list[tuple[int, str]], reason: str) -> None:
        retention = runtime_for(self._app).settings.retention
        for done in cancelling.cancel_children(
            self._app, self._store, self._parent, children, reason, False, retention
        ):
            logger.info("celery-durable: %s: cancelled child %s (%s)", self._parent, done.id,
                        done.state)  # fmt: skip


def record_outcome(
    app: Any, store: JournalStore, parent: str, index: int, outcome: str, token: str
) -> None:
    """Complete the parent's call at ``index`` with ``outcome``, if ``token`` is the call's
    secret; wake the parent if due. An outcome that is not one is refused (logged)."""
    try:
        if not (isinstance(parent, str) and type(index) is int and isinstance(token, str)):
            raise Unreadable("its parent, index or token is of the wrong type")
        read_completion(outcome)
    except Unreadable as exc:
        logger.warning("celery-durable: refused an outcome for child %r/%r that is not one "
                       "(%s); nothing was recorded", parent, index, exc)  # fmt: skip
        return
    # A call journaled before calls had a token is completed by its child's id.
    proof = token or child_id(parent, index)
    state = store.complete(parent, index, "call", proof, outcome)
    if state == 2:
        publish_due(app, store)
    elif state == 0:
        logger.info("celery-durable: an outcome for child %s/%s was not recorded (recorded "
                    "before, its parent is gone or finished, or its token is not the "
                    "call's)", parent, index)  # fmt: skip


def _success(value: Any) -> str:
    return encode_completion(PLAIN_JSON.encode(value), None, time.time())


def _failure(exc: BaseException) -> str:
    return encode_completion(None, record_of(exc), time.time())


def _store_of(app: Any) -> JournalStore:
    # A worker's child reports to its parent's journal in Redis; an eager parent records
    # its child's outcome itself (CeleryHost.publish_call).
    return runtime_for(app).store


@shared_task(  # type: ignore[untyped-decorator]
    name="celery_durable.child_succeeded", bind=True, acks_late=True, ignore_result=True,
    autoretry_for=(JournalUnavailableError,), retry_backoff=True, max_retries=None,
)  # fmt: skip
def child_succeeded(self: Task, value: Any, parent: str, index: int, token: str = "") -> None:
    """Record a child's return value in its parent's journal (the child's ``link``)."""
    record_outcome(self.app, _store_of(self.app), parent, index, _success(value), token)


# Not bound: Celery calls an errback with (request, exc, traceback) only when it is not.
@shared_task(name="celery_durable.child_failed")  # type: ignore[untyped-decorator]
def child_failed(
    request: Any, exc: BaseException, traceback: Any, parent: str, index: int, token: str = ""
) -> None:
    """Record a child's failure in its parent's journal (the child's ``link_error``).

    Celery runs this in the child's worker, in process; if the journal cannot be
    written there, the outcome goes on as a message, to be written with retries.
    """
    outcome = _failure(exc)
    # The app itself, not Celery's proxy of it: the runtime is kept per app, by weak ref.
    app = current_app._get_current_object()
    try:
        record_outcome(app, _store_of(app), parent, index, outcome, token)
    except Exception as error:
        logger.warning("celery-durable: could not record the failure of child %s/%s now "
                       "(%s); sending it on", parent, index, error)  # fmt: skip
        child_outcome.apply_async((parent, index, outcome, token))


@shared_task(  # type: ignore[untyped-decorator]
    name="celery_durable.child_outcome", bind=True, acks_late=True, ignore_result=True,
    autoretry_for=(JournalUnavailableError,), retry_backoff=True, max_retries=None,
)  # fmt: skip
def child_outcome(self: Task, parent: str, index: int, outcome: str, token: str = "") -> None:
    """Record a child's outcome (JSON) in its parent's journal, if ``token`` is the call's."""
    record_outcome(self.app, _store_of(self.app), parent, index, outcome, token)
