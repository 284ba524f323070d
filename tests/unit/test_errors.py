"""Errors survive pickling, because Celery pickles exceptions into results."""

from __future__ import annotations

import pickle

from celery_durable.errors import (
    DurableError,
    NonDeterminismError,
    RetryableError,
    TerminalError,
)


def test_terminal_error_round_trips_through_pickle() -> None:
    error = TerminalError("card declined", {"code": 51}, error_type="PaymentError", attempts=3)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TerminalError
    assert (copy.message, copy.metadata, copy.error_type, copy.attempts) == (
        "card declined",
        {"code": 51},
        "PaymentError",
        3,
    )
    assert str(copy) == "PaymentError: card declined"


def test_retryable_error_round_trips_through_pickle() -> None:
    copy = pickle.loads(pickle.dumps(RetryableError("busy", retry_after=2.5)))
    assert (copy.message, copy.retry_after) == ("busy", 2.5)


def test_every_error_derives_from_durable_error() -> None:
    assert issubclass(NonDeterminismError, DurableError)
    assert issubclass(TerminalError, Exception)
    assert str(TerminalError("plain")) == "plain"


class OutOfStock(TerminalError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"{sku} is out of stock", {"sku": sku})


def test_a_terminal_error_subclass_with_its_own_init_survives_pickling() -> None:
    copy = pickle.loads(pickle.dumps(OutOfStock("A1")))
    assert type(copy) is OutOfStock
    assert (copy.message, copy.metadata) == ("A1 is out of stock", {"sku": "A1"})


def test_invocation_cancelled_round_trips_through_pickle_and_celerys_json_and_record() -> None:
    from celery.app import Celery
    from celery.backends.base import DisabledBackend

    from celery_durable.errors import InvocationCancelled
    from celery_durable.journal.failures import rebuild, record_of

    error = InvocationCancelled.because("the customer left")
    assert isinstance(error, TerminalError)
    for copy in (
        pickle.loads(pickle.dumps(error)),
        rebuild(record_of(error)),  # as a journal keeps it, and a parent's future raises it
    ):
        assert type(copy) is InvocationCancelled
        assert copy.reason == "the customer left"
        assert str(copy) == "the invocation was cancelled: the customer left"
    # Celery's JSON result backend rebuilds an exception as cls(*args).
    backend = DisabledBackend(Celery(set_as_current=False))
    stored = backend.prepare_exception(error, "json")
    back = backend.exception_to_python(stored)
    assert type(back) is InvocationCancelled and back.reason == "the customer left"
