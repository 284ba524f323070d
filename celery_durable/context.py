"""``DurableContext``: what durable code calls. The machinery is in ``engine``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery_durable.codec import Codec
from celery_durable.engine.execution import Execution
from celery_durable.engine.run import run_step
from celery_durable.policy import RetryPolicy
from celery_durable.rand import DurableRandom

T = TypeVar("T")


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
    def rand(self) -> DurableRandom:
        """Random values that are the same on every replay; not for cryptography."""
        self._ex.ensure_usable("ctx.rand")
        return self._ex.rand

    def run(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        retry: RetryPolicy | None = None,
        codec: str | Codec[Any] | None = None,
        at_most_once: bool = False,
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
            TerminalError: ``fn`` raised it, or its retry policy is exhausted; now or
                on the execution that journaled it.
            NonDeterminismError: the journal holds another operation at this point.
            CodecError: the codec cannot store the value; nothing was journaled.
        """
        self._ex.ensure_usable("ctx.run")
        return cast(T, run_step(self._ex, name, fn, args, kwargs, retry, codec, at_most_once))
