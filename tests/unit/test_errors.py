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
