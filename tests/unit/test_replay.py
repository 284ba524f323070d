"""``celery_durable.testing.replay``: today's code against a saved journal, no step run."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from celery_durable import NonDeterminismError
from celery_durable.testing import JournalReader, load_journal, replay
from tests.unit.replay_shop import FIXTURE, TASK_ID, Shop, make_checkout


@pytest.fixture
def saved() -> dict[str, Any]:
    """The journal of a completed checkout, as ``celery durable show ID --json`` prints it."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_the_recorded_code_replays_its_journal_without_running_a_step() -> None:
    shop = Shop()
    checkout = make_checkout("recorded", shop)
    result = replay(checkout, FIXTURE, args=("o-1",))
    assert result.ok and result.divergence is None
    assert (result.invocation_id, result.entries, result.replayed) == (TASK_ID, 4, 4)
    assert result.ended == "returned"
    # The seed is the journal's: ctx.rand gave the key the recorded result holds.
    assert result.value == load_journal(FIXTURE).result
    assert shop.calls == []


@pytest.mark.parametrize(
    ("variant", "index", "recorded", "asked"),
    [
        ("inserted", 1, "run 'charge'", "asked for run 'fraud-check'"),
        ("renamed", 1, "run 'charge'", "asked for run 'pay'"),
        ("removed", 2, "sleep 'settle'", "asked for run 'ship'"),
        ("returns-early", 2, "sleep 'settle'", "returned"),
    ],
)
def test_a_changed_body_is_reported_at_its_first_divergence(
    variant: str, index: int, recorded: str, asked: str
) -> None:
    shop = Shop()
    checkout = make_checkout(variant, shop)
    with pytest.raises(NonDeterminismError) as raised:
        replay(checkout, FIXTURE, args=("o-1",))
    message = str(raised.value)
    assert f"diverges at journal index {index}" in message
    assert f"the journal recorded {recorded}, but the code {asked}" in message
    result = replay(checkout, FIXTURE, args=("o-1",), raise_on_divergence=False)
    assert result.divergence is not None
    assert (result.divergence.index, result.divergence.recorded, result.divergence.asked) == (
        index,
        recorded,
        asked,
    )
    assert shop.calls == []


def test_a_step_named_from_uuid4_diverges_where_it_is_asked_for() -> None:
    result = replay(make_checkout("uuid"), FIXTURE, args=("o-1",), raise_on_divergence=False)
    assert result.divergence is not None
    assert result.divergence.index == 3
    assert result.divergence.recorded == "run 'ship'"
    assert result.divergence.asked.startswith("asked for run 'ship-")


def test_another_result_diverges_unless_results_are_not_compared() -> None:
    checkout = make_checkout("other-result")
    result = replay(checkout, FIXTURE, args=("o-1",), raise_on_divergence=False)
    assert result.divergence is not None
    assert result.divergence.index == 4  # past the last entry: the outcome
    assert '"status": "charged"' in result.divergence.asked
    assert replay(checkout, FIXTURE, args=("o-1",), compare_result=False).ok


def test_code_that_goes_past_a_running_journal_stops_there_without_divergence(
    saved: dict[str, Any],
) -> None:
    running = copy.deepcopy(saved)
    running.update(status="suspended", result=None)
    del running["steps"][3:]
    shop = Shop()
    result = replay(make_checkout("recorded", shop), running, args=("o-1",))
    assert (result.ok, result.ended, result.next, result.replayed) == (
        True,
        "beyond",
        "run 'ship'",
        3,
    )
    assert shop.calls == []
    # A finished invocation that ended there is another matter.
    running["status"] = "completed"
    with pytest.raises(NonDeterminismError, match=r"end of the journal .* asked for run 'ship'"):
        replay(make_checkout("recorded", shop), running, args=("o-1",))


def test_a_failed_step_replays_its_recorded_error(saved: dict[str, Any]) -> None:
    failed = copy.deepcopy(saved)
    charge = failed["steps"][1]
    charge.update(status="failed", value=None, error={
        "type": "ConnectionError", "module": "builtins", "qualname": "ConnectionError",
        "message": "declined", "args": ["declined"], "metadata": {}, "attempts": 3,
    })  # fmt: skip
    del failed["steps"][2:]
    failed.update(status="failed", result=None, error=charge["error"])
    result = replay(make_checkout(), failed, args=("o-1",))
    assert (result.ok, result.ended) == (True, "raised")
    assert isinstance(result.error, ConnectionError)
    # The code must fail the way the journal says it did.
    failed["error"] = {**charge["error"], "type": "ValueError"}
    with pytest.raises(NonDeterminismError, match="a failure with ValueError"):
        replay(make_checkout(), failed, args=("o-1",))


def test_the_raw_form_replays_exactly_and_carries_the_arguments() -> None:
    checkout = make_checkout()
    run = checkout.apply(args=("o-2",), task_id="raw-1")
    assert run.get()["status"] == "paid"
    raw = JournalReader(checkout.app).export("raw-1")
    assert raw["format"] == "celery-durable.journal/1"
    assert [e["n"] for e in raw["entries"]] == ["reserve", "charge", "settle", "ship"]
    raw["args"] = ["o-2"]  # an eager run keeps no call to resume it with
    assert replay(make_checkout(), raw).ok
    with pytest.raises(NonDeterminismError, match="asked for run 'pay'"):
        replay(make_checkout("renamed"), json.dumps(raw))


def test_a_journal_of_another_task_is_refused(saved: dict[str, Any]) -> None:
    saved["task_name"] = "shop.refund"
    with pytest.raises(ValueError, match=r"belongs to task 'shop\.refund'"):
        replay(make_checkout(), saved, args=("o-1",))
