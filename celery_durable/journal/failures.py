"""Step failures as Celery knows them: how an error is recorded, and how it comes back.

A failed step is journaled as a record of its error: the type's module and qualified
name, its message, its ``args`` (as Celery's result backend keeps them), the attempts
it took and optional metadata. It is raised from ``ctx.run`` on the first run and on
every replay as an exception that is **both** an instance of the original type and a
``TerminalError``, rebuilt the way Celery's result backend rebuilds exceptions
(``cls(*args)``): ``except ValueError`` works as for a plain task, and a saga's
``except TerminalError`` catches every step failure.

The rebuilt type is a subclass of the original type and of ``StepFailure``, made once
per original type. It carries the original's ``__module__`` and ``__qualname__``, so
Celery's JSON result backend stores it under the original name and a client's
``AsyncResult.get()`` raises the original type. Only a type that a module imported
already defines is rebuilt (nothing is imported because a record names it); a type
that is not found, or cannot be subclassed, comes back as a plain ``TerminalError``
with the original type's name.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from celery_durable.errors import StepInterruptedError, TerminalError

#: What a record of an error holds, as stored in a journal entry or outcome.
ErrorRecord = dict[str, Any]
#: The most characters of a traceback a record keeps: its end, where the error was raised.
TRACEBACK_CHARS = 8000


class StepFailure(TerminalError):
    """Raised from ``ctx.run`` for a step that failed with an error of another type.

    Every instance is also an instance of that type (its class derives from both).
    ``message`` is the original's ``str()``, ``error_type`` its type's name and
    ``attempts`` how many times the step ran.
    """

    def __init__(self, *args: Any, **_: Any) -> None:
        # Reached through the original type's own __init__ calling super().__init__:
        # keep its arguments as the original would, not TerminalError's fields.
        Exception.__init__(self, *args)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle, (record_of(self),))


def record_of(exc: BaseException, attempts: int | None = None) -> ErrorRecord:
    """Return the JSON form of an error: type, message, Celery-style args, attempts, and
    the traceback of where it was raised (for people reading the journal; never used to
    rebuild it)."""
    if isinstance(exc, TerminalError):
        cls = type(exc).__mro__[1] if isinstance(exc, StepFailure) else type(exc)
        record = {
            "type": exc.error_type,
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "message": exc.message,
            "args": _storable_args(exc.args) if isinstance(exc, StepFailure) else [],
            "metadata": exc.metadata,
            "attempts": exc.attempts if attempts is None else attempts,
        }
    else:
        cls = type(exc)
        record = {
            "type": cls.__name__,
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "message": str(exc),
            "args": _storable_args(exc.args),
            "metadata": {},
            "attempts": attempts or 1,
        }
    if exc.__traceback__ is not None:
        record["traceback"] = _traceback_text(exc)
    return record


def _traceback_text(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # a __str__ that raises, or a broken chain: no traceback then
        return ""
    if len(text) > TRACEBACK_CHARS:
        text = "...\n" + text[-TRACEBACK_CHARS:]
    return text


def rebuild(record: ErrorRecord) -> TerminalError:
    """Return the exception a journaled error record describes (see the module docstring).

    A record is data from the journal: a field of the wrong type is read as missing.
    """
    if not isinstance(record, dict):
        record = {"message": f"an unreadable error record: {ascii(record)[:200]}"}
    message = str(record.get("message", ""))
    metadata = record.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    error_type = str(record.get("type") or "TerminalError")
    attempts = record.get("attempts", 1)
    attempts = attempts if type(attempts) is int else 1
    cls = _find(record.get("module"), record.get("qualname"))
    if cls is not None and issubclass(cls, TerminalError):
        terminal = cls.__new__(cls)
        TerminalError.__init__(terminal, message, metadata, error_type, attempts)
        return terminal
    failure_cls = _failure_type(cls) if cls is not None else None
    if failure_cls is None:
        fallback = StepInterruptedError if error_type == "StepInterruptedError" else TerminalError
        return fallback(message, metadata, error_type=error_type, attempts=attempts)
    args = record.get("args")
    args = tuple(args) if isinstance(args, list) and args else (message,)
    try:
        exc = failure_cls(*args)
    except Exception:  # an __init__ that wants other arguments: keep them as args only
        exc = failure_cls.__new__(failure_cls)
        exc.args = args
    exc.message, exc.metadata, exc.error_type, exc.attempts = (
        message, dict(metadata), error_type, attempts,
    )  # fmt: skip
    return exc


def _find(module: Any, qualname: Any) -> type[BaseException] | None:
    """Return the exception class a record names, if a module this process has imported
    already defines it.

    A record is data that anyone who can write to the journal chose: importing the module
    it names would run that module's code (Celery's result backend looks in
    ``sys.modules`` only, for the same reason: CVE-2021-23727).
    """
    if not isinstance(module, str) or not isinstance(qualname, str) or "<locals>" in qualname:
        return None
    found: Any = sys.modules.get(module)
    if found is None:
        return None
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None  # like Celery's backend: only exception classes are ever rebuilt


_FAILURE_TYPES: dict[type[BaseException], type[StepFailure] | None] = {}


def _failure_type(cls: type[BaseException]) -> type[StepFailure] | None:
    """Return the subclass of ``cls`` and ``StepFailure``, made once per ``cls``."""
    if cls not in _FAILURE_TYPES:
        try:
            made = type(
                cls.__name__,
                (cls, StepFailure),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    # The original's str(), even where its type formats its own fields
                    # (UnicodeError, OSError) and those could not be rebuilt.
                    "__str__": StepFailure.__str__,
                },
            )
        except TypeError:  # a layout that cannot be combined, or a final class
            made = None
        _FAILURE_TYPES[cls] = made
    return _FAILURE_TYPES[cls]


def _storable_args(args: tuple[Any, ...]) -> list[Any]:
    # As Celery's result backend keeps args: each one as it is if it serialises, else
    # its repr.
    kept = []
    for arg in args:
        try:
            json.dumps(arg)
        except (TypeError, ValueError):
            arg = repr(arg)
        kept.append(arg)
    return kept


def _unpickle(record: ErrorRecord) -> TerminalError:
    return rebuild(record)
