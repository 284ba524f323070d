"""Where celery-durable's errors meet Celery's: its autoretry wrapper, its result backend.

- Celery's autoretry wrapper catches what a task's ``autoretry_for`` names, often
  ``Exception``. ``shield_from_autoretry`` carries our own errors past it (``Escape``):
  a ``TerminalError`` means "do not retry", the others need their own handling (pause,
  refuse, retry until Redis is back). A step's failure goes on to it, as the same
  error would in a plain task: the retry re-opens the step (``engine.reopen``), and
  Celery's ``max_retries``, which the step policy's retries count towards, bounds it.
- ``ResultEncodeError``: a return value the codec cannot store fails the task as a
  plain task fails when its result backend cannot serialise its value.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from kombu.exceptions import EncodeError

from celery_durable.errors import CodecError, DurableError, RetryableError
from celery_durable.journal.failures import StepFailure


class ResultEncodeError(CodecError, EncodeError):
    """Raised when the codec cannot store the value a task returned.

    It is a ``CodecError``, and kombu's ``EncodeError``, which a plain task fails with
    when its result backend cannot serialise its value. The result backend stores it
    under kombu's name, so ``AsyncResult.get()`` raises ``kombu.exceptions.EncodeError``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # By value: its class goes by kombu's name, where pickle would find kombu's.
        return (_result_encode_error, (self.message,))


ResultEncodeError.__module__ = EncodeError.__module__
ResultEncodeError.__name__ = ResultEncodeError.__qualname__ = EncodeError.__qualname__


def _result_encode_error(message: str) -> ResultEncodeError:
    return ResultEncodeError(message)


class Escape(BaseException):
    """Carries one of our errors past Celery's autoretry wrapper, which catches Exception."""

    def __init__(self, error: DurableError) -> None:
        super().__init__(str(error))
        self.error = error


#: The error that just escaped the body into Celery's autoretry wrapper: a retry for it
#: is Celery's, not the body's decision (``flow.CeleryFlow.retry``).
escaped: ContextVar[BaseException | None] = ContextVar("celery_durable_escaped", default=None)


def shield_from_autoretry(task: Any) -> None:
    """Wrap the body that ``task``'s autoretry wrapper calls, once (see the module)."""
    run = task.__dict__.get("_orig_run")
    if run is None or getattr(run, "_durable_shielded", False):
        return

    def shielded(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except (RetryableError, StepFailure) as exc:
            escaped.set(exc)
            raise
        except DurableError as exc:
            raise Escape(exc) from exc
        except Exception as exc:
            escaped.set(exc)
            raise

    shielded._durable_shielded = True  # type: ignore[attr-defined]
    task._orig_run = shielded
