"""Step failures come back as their original type and as a TerminalError, as Celery rebuilds."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_durable.errors import StepInterruptedError, TerminalError
from celery_durable.journal.failures import StepFailure, rebuild, record_of


class PaymentDeclined(Exception):
    """A user error whose __init__ takes other arguments than its message."""

    def __init__(self, code: int, amount: float) -> None:
        super().__init__(f"declined with code {code} for {amount}")
        self.code = code
        self.amount = amount


class Refused(Exception):
    """A user error whose __init__ cannot be called with its own args."""

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"refused: {reason}")


class CardExpired(TerminalError):
    """A user TerminalError with an __init__ of its own."""

    def __init__(self, card: str) -> None:
        super().__init__(f"card {card} expired", {"card": card})


def through_the_journal(exc: BaseException, attempts: int = 1) -> TerminalError:
    """Record ``exc`` as a journal entry holds it (JSON text), and rebuild it."""
    return rebuild(json.loads(json.dumps(record_of(exc, attempts))))


@pytest.mark.parametrize(
    "original",
    [
        ValueError("bad amount"),
        KeyError("sku"),
        ConnectionError(111, "refused"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        ZeroDivisionError("division by zero"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_builtin_error_comes_back_as_its_type_and_a_terminal_error(
    original: Exception,
) -> None:
    rebuilt = through_the_journal(original, attempts=3)
    assert isinstance(rebuilt, type(original))
    assert isinstance(rebuilt, TerminalError)
    assert str(rebuilt) == str(original)
    if not isinstance(original, UnicodeDecodeError):  # its bytes argument is kept as repr
        assert rebuilt.args == original.args
        assert repr(rebuilt) == repr(original)
    assert (rebuilt.error_type, rebuilt.attempts) == (type(original).__name__, 3)
    assert type(rebuilt).__qualname__ == type(original).__qualname__
    assert type(rebuilt).__module__ == type(original).__module__


def test_the_rebuilt_type_is_made_once_per_original_type() -> None:
    assert type(through_the_journal(ValueError("a"))) is type(through_the_journal(ValueError("b")))


def test_a_user_error_with_its_own_init_is_rebuilt_through_it() -> None:
    rebuilt = through_the_journal(PaymentDeclined(51, 9.5))
    assert isinstance(rebuilt, PaymentDeclined)
    assert isinstance(rebuilt, TerminalError)
    # Celery's backend calls cls(*args); args are the message this __init__ passed on.
    assert str(rebuilt) == "declined with code 51 for 9.5"


def test_a_user_error_that_cannot_take_its_args_keeps_its_type_and_message() -> None:
    rebuilt = through_the_journal(Refused(reason="limit"))
    assert isinstance(rebuilt, Refused)
    assert isinstance(rebuilt, TerminalError)
    assert str(rebuilt) == "refused: limit"


def test_a_type_that_cannot_be_found_comes_back_as_a_terminal_error_with_its_name() -> None:
    class Local(Exception):
        pass

    rebuilt = through_the_journal(Local("gone"))
    assert type(rebuilt) is TerminalError
    assert (rebuilt.error_type, rebuilt.message) == ("Local", "gone")
    assert str(rebuilt) == "Local: gone"
    unknown = rebuild({"type": "Vanished", "module": "no.such.module", "qualname": "Vanished",
                       "message": "m", "args": ["m"]})  # fmt: skip
    assert (type(unknown), unknown.error_type, unknown.message) == (TerminalError, "Vanished", "m")


def test_a_record_naming_something_that_is_not_an_exception_is_not_rebuilt_from_it() -> None:
    record = {"type": "system", "module": "os", "qualname": "system", "message": "x", "args": []}
    assert type(rebuild(record)) is TerminalError


def test_a_record_never_imports_the_module_it_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Anyone who can write to the journal writes records: importing what one names would
    # run that module's code (Celery's CVE-2021-23727). Only imported modules are looked in.
    marker = tmp_path / "imported"
    monkeypatch.setenv("HD_PLANTED", str(marker))
    planted = "tests.hardening.planted"
    assert planted not in sys.modules
    record = {"type": "PlantedError", "module": planted, "qualname": "PlantedError",
              "message": "forged", "args": ["forged"]}  # fmt: skip
    rebuilt = rebuild(record)
    assert planted not in sys.modules
    assert not marker.exists()
    assert (type(rebuilt), rebuilt.error_type, rebuilt.message) == (
        TerminalError, "PlantedError", "forged",
    )  # fmt: skip


@pytest.mark.parametrize(
    "record",
    [
        "not a record",
        ["a", "list"],
        {"message": ["not", "text"], "metadata": "x", "attempts": "many", "args": "abc"},
        {"module": 1, "qualname": None, "type": 5},
        {"module": "builtins", "qualname": "ValueError", "message": "m", "args": {"a": 1}},
    ],
)
def test_a_record_of_the_wrong_shape_still_comes_back_as_a_terminal_error(record: Any) -> None:
    rebuilt = rebuild(record)
    assert isinstance(rebuilt, TerminalError)
    assert rebuilt.attempts == 1
    assert isinstance(rebuilt.metadata, dict)


def test_a_terminal_error_subclass_comes_back_as_itself_with_its_fields() -> None:
    rebuilt = through_the_journal(CardExpired("4242"), attempts=1)
    assert type(rebuilt) is CardExpired
    assert (rebuilt.message, rebuilt.metadata) == ("card 4242 expired", {"card": "4242"})
    interrupted = through_the_journal(StepInterruptedError("died inside"))
    assert type(interrupted) is StepInterruptedError


def test_arguments_that_do_not_serialise_are_kept_as_their_repr() -> None:
    rebuilt = through_the_journal(ValueError({1, 2}, "and text"))
    assert rebuilt.args == ("{1, 2}", "and text")


def test_a_rebuilt_failure_survives_pickling_as_celery_does_it() -> None:
    rebuilt = through_the_journal(PaymentDeclined(51, 9.5), attempts=2)
    again = pickle.loads(pickle.dumps(rebuilt))
    assert type(again) is type(rebuilt)
    assert isinstance(again, StepFailure)
    assert (str(again), again.attempts) == (str(rebuilt), 2)


def test_celerys_json_result_backend_gives_the_client_the_original_type() -> None:
    app = Celery("failures", backend="cache+memory://", set_as_current=False)
    backend: Any = app.backend
    rebuilt = through_the_journal(KeyError("sku"))
    stored = json.loads(json.dumps(backend.prepare_exception(rebuilt, "json")))
    assert stored["exc_type"] == "KeyError"
    assert stored["exc_module"] == "builtins"
    client_side = backend.exception_to_python(stored)
    assert type(client_side) is KeyError
    assert client_side.args == ("sku",)
    app.close()


def test_a_raised_error_is_recorded_with_its_traceback_kept_short() -> None:
    def charge() -> None:
        raise ValueError("card declined")

    try:
        charge()
    except ValueError as exc:
        record = record_of(exc)
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError("card declined")' in record["traceback"]
    assert record["traceback"].endswith("ValueError: card declined\n")
    assert "traceback" not in record_of(ValueError("never raised"))

    try:
        raise ValueError("x" * 20_000)
    except ValueError as exc:
        long = record_of(exc)["traceback"]
    assert len(long) <= 8004 and long.startswith("...\n") and long.endswith("x\n")
    rebuilt = rebuild(json.loads(json.dumps(record)))
    assert isinstance(rebuilt, ValueError) and str(rebuilt) == "card declined"
