"""The ``durable_replay_each_step`` test mode: every step after the first is replayed.

An execution in this mode ends right after the body journals a new entry, and the
task is delivered again (in process when eager, as a Celery retry with countdown 0 on
a worker). The next execution replays everything up to there and journals one entry
more. A body that asks for other operations when replayed (it branches on the clock,
``random``, ``uuid.uuid4()``, the state of the world) fails with
``NonDeterminismError`` in the user's tests instead of in production.

Entries that ``run_async`` steps journal from their threads do not end the execution
where they land (the body is elsewhere then); an execution that journaled any ends
once more before it finishes the invocation, so that they too are replayed once.

The mode costs nothing when it is off: it is a subclass of ``Execution`` that the task
layer asks ``invocation.begin`` for only when the setting is on.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from celery_durable.engine.execution import Execution

if TYPE_CHECKING:
    from celery_durable.engine.reopen import Owned


class AbandonExecution(BaseException):
    """Ends an execution after it journaled a new entry, so that it is delivered again.

    It derives from ``BaseException`` so that an ``except Exception`` in the body does
    not swallow it: the task layer releases the lease and runs the task again.
    """

    def __init__(self, invocation_id: str, index: int, fence: int = 0, own_from: int = 0) -> None:
        super().__init__(
            f"durable_replay_each_step: invocation {invocation_id} journaled entry {index}; "
            "it runs again and replays it"
        )
        self.invocation_id = invocation_id
        self.index = index
        self.fence = fence
        """The fence of the execution it ends."""
        self.own_from = own_from
        """The first entry that execution journaled: the next one takes them over, as if
        it had journaled them itself (a retry of its body may re-open them)."""

    @classmethod
    def of(cls, ex: Execution, index: int) -> AbandonExecution:
        """End ``ex``, which journaled entry ``index``."""
        return cls(ex.id, index, ex.fence, ex.resume_at)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.invocation_id, self.index, self.fence, self.own_from))


class ReplayEachStep(Execution):
    """An execution that ends after each entry the body journals (see the module)."""

    __slots__ = ("journaled", "unreplayed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journaled = -1
        """Index of the entry the body journaled, until the execution ends for it."""
        self.journaled = -1
        """Index of the entry the body journaled, until the execution ends for it."""
        self.unreplayed = -1
        """Index of an entry an async step journaled and no execution replayed yet."""

    def commit(
        self, index: int, entry: str, ends_attempts: bool, owned: Owned | None = None
    ) -> bool:
        written = super().commit(index, entry, ends_attempts, owned)
        if written:
            if threading.get_ident() == self._thread:
                # Ended once the operation told its observer (spans, signals, log lines
                # hear of the entry), before the body gets control back: ``reported``.
                self.journaled = index
            else:
                self.unreplayed = max(self.unreplayed, index)
        return written

    def reported(self, index: int) -> None:
        self._end_if_journaled()

    def ensure_usable(self, what: str) -> None:
        super().ensure_usable(what)
        self._end_if_journaled()  # in case an operation journaled and did not report

    def _end_if_journaled(self) -> None:
        if self.journaled >= 0:
            index, self.journaled = self.journaled, -1
            raise AbandonExecution.of(self, index)

    def must_replay(self) -> bool:
        """True when the execution must end once more before it finishes the invocation."""
        return self.journaled >= 0 or self.unreplayed >= 0


def must_replay(ex: Execution) -> bool:
    """True when ``ex`` runs in the mode and journaled an entry that no execution has
    replayed yet (an async step's, or the body's last one)."""
    return isinstance(ex, ReplayEachStep) and ex.must_replay()
