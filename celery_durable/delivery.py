"""What one delivery of a ``DurableTask`` brings to its start: where its journal is, the
``StartRequest`` built from Celery's request, who holds the lease, and what it takes
over from the execution before it. ``task`` runs the execution; this module only reads
the request.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from celery_durable import concurrency
from celery_durable.children import TIMEOUT_HEADER
from celery_durable.deadlines import timeout_of
from celery_durable.engine.execution import Execution
from celery_durable.errors import ValueTooLargeError
from celery_durable.fingerprint import fingerprint
from celery_durable.flow import ENDED_FENCE_HEADER, replacing
from celery_durable.journal.store import JournalStore, StartRequest
from celery_durable.runtime import Runtime
from celery_durable.settings import DurableSettings
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.wakeups import check_call_size

if TYPE_CHECKING:
    from celery_durable.flow import CeleryFlow


def prepare_start(
    task: CeleryFlow,
    task_id: str,
    shared: bool,
    settings: DurableSettings,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[StartRequest, ValueTooLargeError | None, str, int]:
    """The start request of this delivery, the error of a call too large to store (then
    the request stores none, and the invocation fails without running its body), and the
    invocation's concurrency key and limit (``""`` for none)."""
    request = task.request
    replaced = replacing.get()
    nesting = int(request.get("replaced_task_nesting") or 0)
    if replaced is not None and replaced[0] == task_id:
        nesting = replaced[1]  # eager apply() does not carry the nesting: we do
    # Encoded once per execution: stored when this start creates the invocation, so that
    # even one whose message is lost can be published again (worker.Recovery), and reused
    # by whatever ends the execution (suspend, pause, finish).
    stored_call = task._call() if shared else ""
    oversize = _oversize(stored_call, settings.max_value_bytes, task.name)
    if oversize is not None:
        stored_call = ""  # never stored: the invocation fails at once
    key, limit = concurrency.concurrency_of(task, args, kwargs)
    start = StartRequest(
        task_name=task.name,
        fingerprint=fingerprint(args, kwargs),
        seed=int.from_bytes(os.urandom(8), "little"),
        lease_ttl=settings.lease_ttl,
        holder=holder_id(),
        nesting=nesting,
        call=stored_call,
        ended_fence=int(request.get(ENDED_FENCE_HEADER) or 0),
        timeout=timeout_of(task, request.get(TIMEOUT_HEADER)),
        concurrency=concurrency.encode(key, limit) if key else "",
    )
    return start, oversize, key, limit


def journal_of(request: Any, runtime: Runtime) -> tuple[JournalStore, str, bool]:
    """The store of this delivery's journal, the invocation's id there, and whether other
    processes share that store."""
    if request.called_directly:
        # Called as a plain function: nothing will deliver it again, so its journal lives
        # in memory for this call only.
        return MemoryJournalStore(), str(uuid.uuid4()), False
    if request.is_eager and runtime.settings.eager_journal == "memory":
        return runtime.eager_store, request.id, False
    return runtime.store, request.id, True


def take_over(ex: Execution, own_from: str | None) -> None:
    """Count the entries that the execution before this one journaled and ended without
    acting on as this one's own (``OWN_FROM_HEADER``): only if that execution held the
    lease just before this one."""
    fence, _, index = (own_from or "").partition(":")
    if fence.isdigit() and index.isdigit() and int(fence) == ex.fence - 1:
        ex.own_from = min(ex.own_from, int(index))


def _oversize(call: str, limit: int, task_name: str) -> ValueTooLargeError | None:
    """The error of a call over ``durable_max_value_bytes`` (sent without
    ``apply_async``'s check, or before the setting was lowered), or None."""
    try:
        check_call_size(call, limit, task_name, "the invocation failed without running its body")
    except ValueTooLargeError as exc:
        return exc
    return None


def holder_id() -> str:
    """Who holds a lease: this host and process, so that a worker can tell a dead child."""
    pid = os.getpid()
    if _holder[0] != pid:  # a name lookup per execution would be a system call each
        _holder[:] = [pid, f"{socket.gethostname()}:{pid}"]
    return str(_holder[1])


_holder: list[Any] = [0, ""]
