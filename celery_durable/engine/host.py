"""What an execution needs from the task system it runs in: ``children.CeleryHost``
implements it for ``DurableTask``; a replay's sandbox implements it by starting nothing."""

from __future__ import annotations

from typing import Any, Protocol


class Host(Protocol):
    """What an execution needs from the task system it runs in (Celery, for DurableTask)."""

    def publish_call(
        self,
        signature: Any,
        child_id: str,
        index: int,
        token: str,
        timeout: float | None = None,
    ) -> bool:
        """Start the child task ``signature`` under ``child_id``, wired to complete ``index``
        with ``token``, the secret journaled with the call: the child's outcome brings it.
        With ``timeout``, the child has a deadline that many seconds after it starts.

        Returns True when the child ran in this process already (eager execution).
        """
        ...

    def describe_call(self, signature: Any, timeout: float | None = None) -> str:
        """The task name of a child signature, for the journal and for people.

        Raises:
            ContextError: it is not a child this host can start (with ``timeout``).
        """
        ...

    def cancel_children(self, children: list[tuple[int, str]], reason: str) -> None:
        """Cancel the children ``(journal index, child id)`` for ``reason``: the
        invocation raised a cancel, and they have not finished."""
        ...
