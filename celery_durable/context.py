"""``DurableContext``: what durable code calls. The machinery is in ``engine``.

``run`` and ``run_async`` are typed twice over: called without options, mypy checks
the step's arguments against the function (``ParamSpec``); called with ``retry=``,
``codec=`` or ``at_most_once=``, it checks the options and the return type, not the
arguments, because Python's typing cannot put keyword options beside ``**P.kwargs``.
The options are checked at run time either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from celery_durable.codec import Codec
from celery_durable.engine import awakeables, calls, patches, timers
from celery_durable.engine.combinators import Combinator
from celery_durable.engine.execution import Execution
from celery_durable.engine.futures import DurableFuture
from celery_durable.engine.parallel import run_async
from celery_durable.engine.run import run_step
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom

T = TypeVar("T")
P = ParamSpec("P")


class DurableContext:
    """The durable context of one execution of an invocation.

    Get it as ``self.ctx`` inside a ``DurableTask``.
    """

    __slots__ = ("_ex",)

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    @property
    def invocation_id(self) -> str:
        """The Celery task id of this invocation."""
        return self._ex.id

    @property
    def is_replaying(self) -> bool:
        """True while the code is still being handed recorded outcomes."""
        return self._ex.is_replaying

    @property
    def cancelled(self) -> bool:
        """Whether the invocation was cancelled (``cancel_invocation``, a deadline), as far
        as this execution has heard: from its start, a journal write's reply, or its
        lease's renewal (every third of ``durable_lease_ttl``). Usable inside a step's
        function, so that a long step can stop early; the body gets
        ``InvocationCancelled`` at its next durable operation either way.
        """
        return self._ex.cancelled

    @property
    def rand(self) -> DurableRandom:
        """Random values that are the same on every replay; not for cryptography."""
        self._ex.ensure_usable("ctx.rand")
        return self._ex.rand

    # -- Steps --------------------------------------------------------------------------

    @overload
    def run(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: RetryPolicy | None,
        codec: str | Codec[Any] | None = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> T: ...

    @overload
    def run(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        codec: str | Codec[Any] | None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> T: ...

    @overload
    def run(
        self, name: str, fn: Callable[..., T], /, *args: Any, at_most_once: bool, **kwargs: Any
    ) -> T: ...

    @overload
    def run(self, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    def run(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Any = None,
        codec: Any = None,
        at_most_once: Any = False,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once per invocation and return its journaled value.

        Args:
            name: The step's name, part of its identity: keep it stable across deploys.
            fn: What to run. It must not use the context.
            retry: How a failing ``fn`` is retried; the task's default policy if None.
            codec: How to store the value; the task's default (json) if None.
            at_most_once: Journal that the step started before running it, and never
                run it a second time: if an execution dies inside it, the next one
                raises ``StepInterruptedError``. Costs one more round trip.

        Returns:
            The value as decoded from the journal, on the first run and on replays.

        Raises:
            TerminalError: ``fn`` failed for good (an instance of its error's own type
                too), now or on the execution that journaled it.
            NonDeterminismError: the journal holds another operation at this point.
            CodecError: the codec cannot store the value; nothing was journaled.
        """
        self._ex.ensure_usable("ctx.run")
        self._ex.operation()
        value: T = run_step(self._ex, name, fn, args, kwargs, retry, codec, at_most_once)
        return value

    @overload
    def run_async(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: RetryPolicy | None,
        codec: str | Codec[Any] | None = None,
        **kwargs: Any,
    ) -> DurableFuture[T]: ...

    @overload
    def run_async(
        self, name: str, fn: Callable[..., T], /, *args: Any, codec: str | Codec[Any] | None,
        **kwargs: Any,
    ) -> DurableFuture[T]: ...  # fmt: skip

    @overload
    def run_async(
        self, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> DurableFuture[T]: ...

    def run_async(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Any = None,
        codec: Any = None,
        **kwargs: Any,
    ) -> DurableFuture[T]:
        """Run ``fn`` as a step in a thread, beside the body; its journal index is fixed now.

        Retries happen in its thread, under ``retry`` or the task's default policy.
        ``result()`` returns once its value is journaled; a replay does not run it.
        """
        self._ex.ensure_usable("ctx.run_async")
        self._ex.operation()
        return run_async(self._ex, name, fn, args, kwargs, retry, codec)

    # -- Waiting ------------------------------------------------------------------------

    def timer(self, seconds: float, name: str = "timer") -> DurableFuture[None]:
        """A future that completes ``seconds`` after this call first ran (journaled).

        Waiting for it suspends the invocation: no worker slot is held meanwhile.
        """
        self._ex.ensure_usable("ctx.timer")
        self._ex.operation()
        return timers.timer(self._ex, seconds, name)

    def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Wait ``seconds`` without holding a worker slot: ``ctx.timer(...).result()``."""
        self._ex.ensure_usable("ctx.sleep")
        self._ex.operation()
        timers.timer(self._ex, seconds, name).result()

    def call(
        self, signature: Any, name: str | None = None, timeout: float | None = None
    ) -> DurableFuture[Any]:
        """Start a child task (a ``DurableTask`` or a plain one) exactly once.

        Its task id is ``<this id>/<journal index>``, the same on every replay. Its
        failure comes back as a ``TerminalError`` of the child's error type.

        Args:
            signature: The child, as ``task.s(...)``.
            name: The operation's name in the journal; the child's task name if None.
            timeout: Seconds from the child's start to its deadline (a ``DurableTask``
                child; it replaces the child task's ``durable_timeout``): past it the
                child is cancelled, and this future raises its ``InvocationCancelled``.
        """
        self._ex.ensure_usable("ctx.call")
        self._ex.operation()
        return calls.call(self._ex, signature, name, timeout)

    def awakeable(self, name: str = "awakeable") -> tuple[str, DurableFuture[Any]]:
        """An id and a future that ``resolve_awakeable``/``reject_awakeable`` complete."""
        self._ex.ensure_usable("ctx.awakeable")
        self._ex.operation()
        return awakeables.awakeable(self._ex, name)

    def all(
        self, *futures: DurableFuture[Any], settle: bool = False, name: str = "all"
    ) -> DurableFuture[list[Any]]:
        """Completes when all have succeeded (values in argument order), or with the first
        failure. With ``settle=True`` it waits for all; a failed position holds its error."""
        self._ex.ensure_usable("ctx.all")
        self._ex.operation()
        return Combinator(self._ex, "all", futures, name, settle)

    def any(self, *futures: DurableFuture[Any], name: str = "any") -> DurableFuture[int]:
        """Completes with the position of the first future to complete, successfully or not.

        Which one won is journaled, so a replay takes the same branch.
        """
        self._ex.ensure_usable("ctx.any")
        self._ex.operation()
        return Combinator(self._ex, "any", futures, name)

    # -- Versioning ---------------------------------------------------------------------

    def patched(self, change_id: str) -> bool:
        """Whether this invocation takes the new branch of a change to the task body.

        True for an execution that reaches this point for the first time (a marker
        naming ``change_id`` is journaled, so replays say True too); False for an
        invocation that passed this point before the change was deployed (its journal
        has another operation here, which is left for the old branch to replay)::

            if ctx.patched("charge-with-3ds"):
                charge = ctx.run("charge_3ds", charge_3ds, order_id)
            else:
                charge = ctx.run("charge", charge_card, order_id)

        Once no invocation that started before the change is left, replace the call
        with ``ctx.deprecate_patch(change_id)`` and keep only the new branch; once none
        that started before that deploy is left, remove it.
        """
        self._ex.ensure_usable("ctx.patched")
        return patches.patched(self._ex, change_id)

    def deprecate_patch(self, change_id: str) -> None:
        """Step over the marker ``ctx.patched(change_id)`` journaled here, if there is one.

        It journals nothing: code that calls it replays invocations that ran the
        patched code and those that never saw the patch point alike.
        """
        self._ex.ensure_usable("ctx.deprecate_patch")
        patches.deprecate_patch(self._ex, change_id)
