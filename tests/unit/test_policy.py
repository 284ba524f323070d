"""RetryPolicy: validation, delays, the Celery-option mapping, and retry verdicts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from celery_durable.engine.attempts import Attempts, judge
from celery_durable.errors import ConfigurationError, RetryableError, TerminalError
from celery_durable.policy import RetryPolicy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 0),
        ("max_attempts", 1.5),
        ("max_attempts", True),
        ("max_duration", 0),
        ("initial_interval", -1),
        ("factor", 0.5),
        ("max_interval", -0.1),
        ("jitter", 1.5),
        ("retry_on", [ValueError]),
        ("dont_retry_on", (int,)),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\({field}="):
        RetryPolicy(**{field: value})


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_interval=0.5, factor=3, max_interval=10)
    assert [policy.delay(n, lambda: 0.0) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]


def test_jitter_takes_off_a_fraction_from_the_injected_source() -> None:
    policy = RetryPolicy(initial_interval=8, factor=1, jitter=0.5)
    assert policy.delay(1, lambda: 0.0) == 8
    assert policy.delay(1, lambda: 0.5) == 6
    assert policy.delay(1, lambda: 0.999) == pytest.approx(4.004)


def test_a_huge_exponent_is_capped_not_an_overflow() -> None:
    assert RetryPolicy(factor=10, max_interval=60).delay(10_000, lambda: 0.0) == 60


def celery_task(**options: Any) -> Any:
    defaults = {
        "max_retries": 3,
        "default_retry_delay": 180,
        "retry_backoff": False,
        "retry_backoff_max": 600,
        "retry_jitter": True,
    }
    return SimpleNamespace(**{**defaults, **options})


def test_celery_defaults_mean_four_attempts_three_minutes_apart() -> None:
    policy = RetryPolicy.from_celery_options(celery_task())
    assert policy.max_attempts == 4
    assert [policy.delay(n, lambda: 0.5) for n in (1, 2, 3)] == [180, 180, 180]


def test_celery_backoff_doubles_from_the_backoff_factor_with_full_jitter() -> None:
    policy = RetryPolicy.from_celery_options(
        celery_task(max_retries=5, retry_backoff=2, retry_backoff_max=20)
    )
    assert policy.max_attempts == 6
    assert [policy.delay(n, lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 16, 20]
    assert policy.jitter == 1.0


def test_celery_max_retries_none_means_no_attempt_limit() -> None:
    policy = RetryPolicy.from_celery_options(celery_task(max_retries=None, retry_jitter=False))
    assert policy.max_attempts is None


def attempts(failures: int, first_at: float = 100.0) -> Attempts:
    return Attempts(0, "step", failures, first_at, {"type": "ValueError", "message": "x"})


def never(_: float = 0) -> float:
    return 0.0


def test_verdict_retries_until_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval=1, factor=2)
    assert judge(policy, attempts(1), ValueError(), 100, never).delay == 1
    assert judge(policy, attempts(2), ValueError(), 100, never).delay == 2
    verdict = judge(policy, attempts(3), ValueError(), 100, never)
    assert verdict.give_up
    assert "all 3 attempts failed" in verdict.reason


def test_verdict_gives_up_when_the_next_attempt_would_pass_max_duration() -> None:
    policy = RetryPolicy(max_attempts=None, max_duration=10, initial_interval=4, factor=1)
    assert not judge(policy, attempts(2, first_at=100), ValueError(), 105, never).give_up
    verdict = judge(policy, attempts(3, first_at=100), ValueError(), 107, never)
    assert verdict.give_up
    assert "max_duration=10" in verdict.reason


def test_retry_after_sets_the_next_delay() -> None:
    policy = RetryPolicy(initial_interval=60, retry_on=(KeyError,))
    verdict = judge(policy, attempts(1), RetryableError("busy", retry_after=0.25), 100, never)
    assert (verdict.give_up, verdict.delay) == (False, 0.25)


def test_errors_outside_retry_on_or_inside_dont_retry_on_give_up_at_once() -> None:
    policy = RetryPolicy(retry_on=(OSError,), dont_retry_on=(TimeoutError,))
    assert not judge(policy, attempts(1), ConnectionError(), 100, never).give_up
    assert judge(policy, attempts(1), TimeoutError(), 100, never).give_up
    assert judge(policy, attempts(1), ValueError(), 100, never).give_up
    assert judge(policy, attempts(1), TerminalError("no"), 100, never).give_up


def test_a_worker_death_has_no_error_and_counts_against_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, retry_on=(KeyError,))
    assert not judge(policy, attempts(1), None, 100, never).give_up
    assert judge(policy, attempts(2), None, 100, never).give_up


def test_a_worker_death_is_retried_at_once_so_max_duration_counts_no_delay() -> None:
    policy = RetryPolicy(max_duration=30, initial_interval=60)
    verdict = judge(policy, attempts(1, first_at=100), None, 100, never)
    assert (verdict.give_up, verdict.delay) == (False, 0.0)
