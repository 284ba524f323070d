"""``replay``: run today's code against a recorded journal, run no step, find divergence.

As Temporal's replayer does for workflow histories: the task body runs in this
process on an execution whose journal is the recorded one. Every operation the code
asks for must be the one recorded at its position (index, kind, name); recorded
outcomes are handed back, so nothing a step does happens again. The body stops at
the first of:

- an operation other than the recorded one: a divergence;
- an operation past the end of the journal: fine for an invocation that had not
  finished (it would run that next), a divergence for one that had;
- the end of the body (it returns or raises) with recorded entries left over: a
  divergence; with none left over, for a finished invocation, its outcome must be
  the recorded one (the same error type, or the same result with
  ``compare_result``).

Nothing is written anywhere: the journal lives in a store of this call's own, and a
child call or awakeable is never published or waited for.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery.local import Proxy

from celery_durable.celery_errors import Escape
from celery_durable.engine import cancel
from celery_durable.engine.execution import Execution
from celery_durable.errors import NonDeterminismError, Suspended
from celery_durable.flow import CONTROL_FLOW, current
from celery_durable.journal.failures import record_of
from celery_durable.journal.store import Started, StartRequest
from celery_durable.runtime import runtime_for
from celery_durable.stores.memory import MemoryJournalStore
from celery_durable.task import DurableTask
from celery_durable.testing.journals import RecordedJournal, load_journal
from celery_durable.testing.sandbox import (
    Beyond,
    Diverged,
    NoHost,
    ReplayContext,
    ReplayExecution,
    describe,
)

#: Failures that come from outside the body; a replay cannot reproduce them.
OUTSIDE_FAILURES = frozenset({"WorkerLostError", "TimeLimitExceeded", "TaskRevokedError"})
_FINISHED = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where today's code leaves the recorded journal."""

    index: int
    """The journal position: of the entry that differs, or the end of the journal."""
    recorded: str
    """What the journal holds there, e.g. ``run 'charge'``."""
    asked: str
    """What today's code does there, e.g. ``asked for run 'pay'``."""
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay found."""

    invocation_id: str
    task_name: str
    status: str
    """The recorded invocation's status."""
    entries: int
    """Entries in the recorded journal."""
    replayed: int
    """Entries today's code asked for and got back."""
    ended: str
    """How the body stopped: ``returned``, ``raised``, ``suspended`` (it waits for what
    the journal has not completed), ``beyond`` (it asked for more than the journal
    holds), ``diverged`` (it asked for something else), or ``control`` (Celery's control
    flow, e.g. ``self.retry()``)."""
    next: str | None = None
    """What it would do next, past the end of the journal (``run 'ship'``), if it asked."""
    value: Any = None
    """What the body returned (``ended == "returned"``)."""
    error: BaseException | None = None
    """What the body raised (``raised``, ``control``)."""
    divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        """True when today's code follows the journal."""
        return self.divergence is None


def replay(
    task: Any,
    journal: Any,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    raise_on_divergence: bool = True,
    compare_result: bool = True,
) -> ReplayResult:
    """Replay ``task``'s code as it is today against a recorded ``journal``.

    Args:
        task: A ``DurableTask``.
        journal: The journal: a path to a JSON file, JSON text or a parsed mapping, in
            the form ``celery durable show ID --json`` prints or the one
            ``JournalReader.export`` writes; or an ``Invocation``.
        args: The task's positional arguments; the journal's own if it has them, else none.
        kwargs: The task's keyword arguments, likewise.
        raise_on_divergence: Raise ``NonDeterminismError`` at a divergence, instead of
            returning it in the result.
        compare_result: For a completed invocation, require the same result once
            encoded by the task's codec.

    Returns:
        What the replay found; ``result.divergence`` is None when the code follows it.

    Raises:
        NonDeterminismError: the code diverges, with ``raise_on_divergence``.
        ValueError: the journal is not a journal of ``task``.
    """
    if isinstance(task, Proxy):
        task = task._get_current_object()
    if not isinstance(task, DurableTask):
        raise TypeError(f"replay() takes a DurableTask, not {task!r}")
    recorded = load_journal(journal)
    if recorded.task_name and recorded.task_name != task.name:
        raise ValueError(
            f"journal of invocation {recorded.id} belongs to task {recorded.task_name!r}, "
            f"not {task.name!r}"
        )
    call_args = list(args if args is not None else recorded.args or ())
    call_kwargs = dict(kwargs if kwargs is not None else recorded.kwargs or {})
    result = _Replay(task, recorded).run(call_args, call_kwargs, compare_result)
    if result.divergence is not None and raise_on_divergence:
        raise NonDeterminismError(result.divergence.message)
    return result


# -- The replay ---------------------------------------------------------------------------


class _Replay:
    def __init__(self, task: DurableTask, recorded: RecordedJournal) -> None:
        self.task = task
        self.recorded = recorded

    def run(self, args: list[Any], kwargs: dict[str, Any], compare_result: bool) -> ReplayResult:
        task, recorded = self.task, self.recorded
        settings = runtime_for(task.app).settings
        codec = task._codec(settings.codec)
        seed = recorded.seed or 0
        store = MemoryJournalStore()
        fence = store.start(
            recorded.id, StartRequest(task.name, "replay", seed, 3600.0, "replay:0")
        ).fence
        entries = list(recorded.entries)
        # A journal where a cancel was raised replays it where it was raised.
        raised = cancel.journaled(entries)
        started = Started(
            "run", fence=fence, seed=seed, entries=entries,
            completions=dict(recorded.completions),
            cancel=None if raised is None else cancel.describe(raised[2]),
        )  # fmt: skip
        ex = ReplayExecution(
            store, recorded.id, started, codec, task._default_policy(settings.retry)
        )
        ex.lenient_codecs = not recorded.exact_codecs
        ex.passthrough = CONTROL_FLOW
        ex.host = NoHost()
        token = current.set((ex, ReplayContext(ex)))
        task.push_request(id=recorded.id, args=args, kwargs=kwargs, task=task.name)
        try:
            return self._judge(ex, codec, compare_result, lambda: _body_of(task)(*args, **kwargs))
        finally:
            ex.close()
            current.reset(token)
            task.pop_request()

    def _judge(
        self, ex: Execution, codec: Any, compare_result: bool, body: Callable[[], Any]
    ) -> ReplayResult:
        recorded = self.recorded
        finished = recorded.status in _FINISHED and not (
            recorded.status == "failed" and (recorded.error or {}).get("type") in OUTSIDE_FAILURES
        )
        end = len(recorded.entries)
        try:
            try:
                value = body()
            except Escape as escape:
                raise escape.error from None
        except Diverged as diverged:
            return self._result(ex, "diverged", divergence=self._divergence(
                diverged.index, diverged.recorded, f"asked for {diverged.asked}"
            ))  # fmt: skip
        except Beyond as beyond:
            if finished:
                return self._result(ex, "beyond", next=beyond.asked, divergence=self._past_end(
                    f"asked for {beyond.asked}"
                ))  # fmt: skip
            return self._result(ex, "beyond", next=beyond.asked)
        except Suspended as suspended:
            waits = ", ".join(f"{a['kind']} {a['name']!r}" for a in suspended.awaiting)
            if ex.position < end:
                return self._result(ex, "suspended", divergence=self._left_over(
                    ex, f"waits for {waits}"
                ))  # fmt: skip
            if finished:
                return self._result(ex, "suspended", divergence=self._past_end(
                    f"waits for {waits}, which the journal never completed"
                ))  # fmt: skip
            return self._result(ex, "suspended", next=f"wait for {waits}")
        except CONTROL_FLOW as flow:
            return self._result(ex, "control", error=flow)
        except Exception as exc:
            record = record_of(exc)
            did = f"raised {record['type']}: {record['message']}"
            if ex.position < end:
                return self._result(ex, "raised", error=exc, divergence=self._left_over(ex, did))
            if finished and recorded.status == "completed":
                return self._result(ex, "raised", error=exc, divergence=self._outcome(
                    "a completion", did
                ))  # fmt: skip
            recorded_type = (recorded.error or {}).get("type")
            if finished and recorded_type != record["type"]:
                return self._result(ex, "raised", error=exc, divergence=self._outcome(
                    f"a failure with {recorded_type}", did
                ))  # fmt: skip
            return self._result(ex, "raised", error=exc)
        if ex.position < end:
            return self._result(ex, "returned", value=value, divergence=self._left_over(
                ex, "returned"
            ))  # fmt: skip
        if finished and recorded.status == "failed":
            failure = recorded.error or {}
            return self._result(ex, "returned", value=value, divergence=self._outcome(
                f"a failure with {failure.get('type')}: {failure.get('message')}", "returned"
            ))  # fmt: skip
        if finished and compare_result:
            differs = _different_result(codec, recorded.result, value)
            if differs is not None:
                return self._result(ex, "returned", value=value, divergence=self._outcome(
                    f"the result {_short(recorded.result)}", f"returned {differs}"
                ))  # fmt: skip
        return self._result(ex, "returned", value=value)

    # -- Reports --------------------------------------------------------------------------

    def _result(
        self,
        ex: Execution,
        ended: str,
        *,
        next: str | None = None,
        value: Any = None,
        error: BaseException | None = None,
        divergence: Divergence | None = None,
    ) -> ReplayResult:
        recorded = self.recorded
        return ReplayResult(
            invocation_id=recorded.id,
            task_name=self.task.name,
            status=recorded.status,
            entries=len(recorded.entries),
            replayed=min(ex.position, len(recorded.entries)),
            ended=ended,
            next=next,
            value=value,
            error=error,
            divergence=divergence,
        )

    def _divergence(self, index: int, recorded: str, asked: str) -> Divergence:
        message = (
            f"replaying invocation {self.recorded.id} of {self.task.name} "
            f"({self.recorded.status}, {len(self.recorded.entries)} journal entries): "
            f"today's code diverges at journal index {index}: the journal recorded "
            f"{recorded}, but the code {asked}. Invocations like it that are running "
            "would be paused by this code: keep the recorded operations, or branch on "
            "ctx.patched('<change id>') so that they keep them, and replay again."
        )
        return Divergence(index, recorded, asked, message)

    def _past_end(self, asked: str) -> Divergence:
        n, status = len(self.recorded.entries), self.recorded.status
        return self._divergence(n, f"the end of the journal (the invocation {status})", asked)

    def _left_over(self, ex: Execution, did: str) -> Divergence:
        index = ex.position
        return self._divergence(index, describe(ex.entries[index]), did)

    def _outcome(self, recorded: str, did: str) -> Divergence:
        return self._divergence(len(self.recorded.entries), recorded, did)


def _body_of(task: DurableTask) -> Callable[..., Any]:
    """The task's own body, without Celery's autoretry wrapper around it."""
    run = inspect.getattr_static(type(task), "run")
    body: Callable[..., Any] = run.__get__(task, type(task))
    return body


def _different_result(codec: Any, recorded: Any, value: Any) -> str | None:
    """How ``value`` differs from the recorded result once stored, or None if it does not."""
    try:
        now = codec.decode(json.loads(codec.encode(value)))
    except Exception as exc:
        return f"a value its codec cannot store ({exc})"
    try:
        before = codec.decode(recorded)
    except Exception:
        return None  # stored by another codec: nothing to compare with
    return None if now == before else _short(json.loads(codec.encode(value)))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
