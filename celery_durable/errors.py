"""Every error celery-durable raises, grouped by who is expected to handle it.

Celery stores exceptions in the result backend, pickled or rebuilt as ``cls(*args)``,
so every constructor argument is kept in ``args`` or restored by ``__reduce__``.
"""

from __future__ import annotations

from typing import Any


class DurableError(Exception):
    """Root of every error celery-durable raises on purpose."""


# -- Raised to user code on purpose -------------------------------------------------


class TerminalError(DurableError):
    """Raised to say: this failed for good, do not retry.

    Raise it inside a step to journal the failure; ``ctx.run`` then raises it on
    this execution and on every replay, without running the step again.

    Attributes:
        message: What went wrong, for people.
        metadata: Optional JSON-serialisable details for the handler.
        error_type: Name of the original exception type when the failure came from
            another error (an exhausted retry policy); ``"TerminalError"`` otherwise.
        attempts: How many times the step ran before it failed for good.
    """

    def __init__(
        self,
        message: str,
        metadata: dict[str, Any] | None = None,
        error_type: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.message = message
        self.metadata = dict(metadata or {})
        self.error_type = error_type or type(self).__name__
        self.attempts = attempts
        # Every field is in args: Celery's result backend rebuilds errors as cls(*args).
        super().__init__(message, self.metadata, self.error_type, attempts)

    def __str__(self) -> str:
        if self.error_type in ("TerminalError", type(self).__name__):
            return self.message
        return f"{self.error_type}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without calling the class: a subclass's __init__ may take other arguments.
        return (
            _rebuild_terminal,
            (type(self), self.message, self.metadata, self.error_type, self.attempts),
        )


def _rebuild_terminal(
    cls: type[TerminalError], message: str, metadata: Any, error_type: str, attempts: int
) -> TerminalError:
    error = cls.__new__(cls)
    TerminalError.__init__(error, message, metadata, error_type, attempts)
    return error


class StepInterruptedError(TerminalError):
    """Raised on replay when an execution died inside an ``at_most_once`` step.

    The step may or may not have taken effect, and it is not run a second time.
    """


class InvocationCancelled(TerminalError):
    """Raised where a cancelled invocation learns of its cancel: at its next durable
    operation (a step's start, ``result()``, a sleep, ``all``/``any``, a child call).

    It is a ``TerminalError``, so a saga's ``except TerminalError`` runs its
    compensation; a body that lets it escape ends ``cancelled``. It is raised once per
    cancel, at the same place on every replay. A child's cancellation comes back from
    the parent's ``result()`` on it as this type too.

    Attributes:
        reason: Why it was cancelled (the operator's reason, or the deadline that passed).
    """

    @classmethod
    def because(cls, reason: str) -> InvocationCancelled:
        """The error that a cancel for ``reason`` raises."""
        return cls(f"the invocation was cancelled: {reason}", {"reason": reason})

    @property
    def reason(self) -> str:
        return str(self.metadata.get("reason", self.message))


class RetryableError(DurableError):
    """Raised inside a step to ask for another attempt, after ``retry_after`` seconds if set.

    It is retried under the step's policy even when ``retry_on`` does not list it;
    ``retry_after`` replaces the policy's delay for the next attempt.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.retry_after))


# -- Raised when the journal and the code disagree ----------------------------------


class NonDeterminismError(DurableError):
    """Raised when replayed code asks for a different step than the journal recorded."""

    @classmethod
    def at(cls, invocation_id: str, index: int, recorded: str, asked: str) -> NonDeterminismError:
        """The error of a journal that recorded ``recorded`` at ``index`` where the code
        asked for ``asked``: what went wrong, and what the operator can do."""
        return cls(
            f"invocation {invocation_id} is not deterministic at journal index {index}: "
            f"the journal recorded {recorded}, but the code asked for {asked}. "
            "Steps are matched by (index, kind, name), so renaming, adding or reordering "
            "steps breaks replay of invocations already running (guard a change with "
            "ctx.patched). It is paused, and deliveries of it run nothing until an operator "
            "moves it on: deploy code that asks for the recorded step, then resume it from "
            f"the journal with `celery -A <your app> durable resume {invocation_id}`, or "
            f"forget it with `celery -A <your app> durable forget {invocation_id}`."
        )


class InvocationConflictError(DurableError):
    """Raised when a task id is reused for another task or other arguments."""


# -- Raised when the journal cannot be used -----------------------------------------


class JournalError(DurableError):
    """Raised when the journal cannot be read or written (Redis unreachable, bad data)."""


class JournalUnavailableError(JournalError):
    """Raised when the journal's Redis cannot be reached; ``DurableTask`` retries the task."""


class JournalRefusedError(JournalUnavailableError):
    """Raised when the journal's Redis refuses a command for lack of a permission (its
    ACL); ``DurableTask`` retries the task, as in an outage, until it is granted."""


class UnreadableJournalError(JournalError):
    """Raised when a stored entry, completion or outcome is not what celery-durable
    writes (corrupted, or written by someone else), or names a codec that neither the
    task nor the app configured. The invocation is paused; nothing stored is changed."""

    @classmethod
    def at(cls, invocation_id: str, where: str, what: str) -> UnreadableJournalError:
        """The error of an invocation whose ``where`` (an entry, a completion) cannot be
        read because of ``what``."""
        return cls(
            f"invocation {invocation_id} cannot be replayed: its {where} is unreadable "
            f"({what}). celery-durable did not write it so: the journal was corrupted or "
            "edited by hand. Nothing was changed, and nothing ran in its place. It is "
            "paused: repair or remove what is wrong, then resume it with "
            f"`celery -A <your app> durable resume {invocation_id}`, or forget it with "
            f"`celery -A <your app> durable forget {invocation_id}`."
        )


class CodecError(DurableError):
    """Raised when a step's value cannot be encoded or decoded by its codec."""


class ValueTooLargeError(CodecError):
    """Raised when an encoded value is larger than ``durable_max_value_bytes``."""


class ConfigurationError(DurableError):
    """Raised when a ``durable_*`` setting, or the Redis it points at, is unusable."""


class UnstableArgumentsError(ConfigurationError):
    """Raised when a task's arguments have no fingerprint that every delivery would share.

    Without one, a redelivery could not be told from a reuse of the task id with
    other arguments. The message names the argument, the place inside it and the
    type, never the value.

    Attributes:
        message: What was refused, why, and what to do, for people.
        argument: Where the refused value sits, as Python would write it
            (``"args[0].customer"``, ``"kwargs['items'][2]"``).
        type_name: Qualified name of the refused value's type.
    """

    def __init__(self, message: str, argument: str = "", type_name: str = "") -> None:
        self.message = message
        self.argument = argument
        self.type_name = type_name
        # Every field is in args: Celery's result backend rebuilds errors as cls(*args).
        super().__init__(message, argument, type_name)

    def __str__(self) -> str:
        return self.message


class AwakeableError(DurableError):
    """Raised when an awakeable id given to resolve or reject it is not one."""


class ContextError(DurableError):
    """Raised when the durable context is used where it has no meaning."""


class InvocationStateError(DurableError):
    """Raised when an operator's request does not fit the invocation's state.

    Resuming one that is neither paused nor failed, restarting one that is gone or
    from a step it never reached, forking onto an id that is taken. Nothing was
    changed; the message says what the state is and what to do.
    """

    @classmethod
    def not_kept(cls, task_id: str, action: str) -> InvocationStateError:
        """The error of an ``action`` (resume, restart, cancel) on an id nothing keeps."""
        return cls(
            f"no invocation {task_id} is kept (it expired, was forgotten, or never started); "
            f"there is nothing to {action}. Check the id with `celery -A <your app> durable ls`."
        )


# -- Control flow: never catch these ------------------------------------------------


class StepRetry(BaseException):
    """Raised through the task body to retry it after a step failed.

    It derives from ``BaseException`` so that an ``except Exception`` in user code
    does not swallow it: the failed attempt is already journaled, and the task must
    end now so that Celery can run it again after ``countdown`` seconds.
    """

    def __init__(self, step: str, countdown: float, error: BaseException | None) -> None:
        super().__init__(f"step {step!r} failed; retrying in {countdown:.3g} s")
        self.step = step
        self.countdown = countdown
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.countdown, self.error))


class LeaseLost(BaseException):
    """Raised through the task body when its execution no longer owns the invocation.

    Another execution took the lease (this one was too slow to renew it, or was
    thought dead), or the invocation was forgotten. This execution must stop at once
    and write nothing more; it derives from ``BaseException`` so that an
    ``except Exception`` in user code cannot swallow it and go on.
    """


class Suspended(BaseException):
    """Raised through the task body when it waits for an outcome that is not there yet.

    The execution ends and frees its worker slot; the invocation is delivered again
    when what it awaits completes. It derives from ``BaseException`` so that an
    ``except Exception`` in user code cannot swallow it and go on without the value.
    """

    def __init__(self, awaiting: list[dict[str, Any]]) -> None:
        super().__init__(f"waiting for {len(awaiting)} outcome(s) from outside")
        self.awaiting = awaiting

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.awaiting,))


class Paused(BaseException):
    """Raised through the task body when a step's retry policy is exhausted and its
    ``on_exhausted`` is ``"pause"``.

    The invocation is paused with its journal as it is (the failed attempts recorded,
    nothing journaled for the step) for an operator to resume once the cause is fixed
    (``celery durable resume``). It derives from ``BaseException`` so that the body
    cannot catch it and compensate: the step has not failed for good.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason,))
