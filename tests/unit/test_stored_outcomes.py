"""A finished invocation's stored outcome: which codecs may read it, and what happens to
one that cannot be read."""

from __future__ import annotations

import base64
import pickle
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.codec import PLAIN_JSON, JsonCodec, PickleCodec
from celery_durable.errors import TerminalError, UnreadableJournalError
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.store import StartRequest
from celery_durable.stores.memory import MemoryJournalStore

ran: list[str] = []


class _Runs:
    """Unpickled, it runs code: it appends to ``ran``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (ran.append, ("unpickled",))


PICKLED = base64.b64encode(pickle.dumps(_Runs())).decode()
FORGED = f'{{"s":"ok","v":"{PICKLED}","c":"pickle"}}'


@pytest.fixture(autouse=True)
def _nothing_ran() -> None:
    ran.clear()


def completed(store: MemoryJournalStore, outcome: str, task_id: str = "inv-1") -> None:
    request = StartRequest("shop.checkout", fingerprint((), {}), 7, 30.0, "test:1")
    started = store.start(task_id, request)
    assert store.finish(task_id, started.fence, "completed", outcome, 60, call="{}") is None


def test_an_outcome_naming_pickle_is_not_unpickled_for_a_json_task_and_app() -> None:
    store = MemoryJournalStore()
    completed(store, FORGED)
    finished = invocation.Finished("completed", FORGED)
    with pytest.raises(UnreadableJournalError, match="names codec 'pickle'") as caught:
        invocation.finished_outcome(store, "inv-1", finished, PLAIN_JSON, PLAIN_JSON)
    assert ran == []
    meta = store.meta["inv-1"]
    assert (meta["status"], meta["paused_reason"]) == ("paused", str(caught.value))
    assert "durable resume inv-1" in meta["paused_reason"]
    assert "inv-1" not in store.expires_at  # waits for an operator


@pytest.mark.parametrize("configured", ["task", "app"])
def test_an_outcome_is_read_by_the_pickle_codec_the_task_or_app_configured(
    configured: str,
) -> None:
    value = base64.b64encode(pickle.dumps({"n": 1})).decode()
    finished = invocation.Finished("completed", f'{{"s":"ok","v":"{value}","c":"pickle"}}')
    task, app = (PickleCodec(), PLAIN_JSON) if configured == "task" else (PLAIN_JSON, PickleCodec())
    assert finished.replay(task, app) == {"n": 1}


def test_a_json_outcome_is_read_by_the_task_codec_of_that_name() -> None:
    finished = invocation.Finished("completed", '{"s":"ok","v":{"a":[1,2]}}')
    assert finished.replay(JsonCodec(dict[str, tuple[int, ...]]), PickleCodec()) == {"a": (1, 2)}


def test_a_recorded_failure_is_raised_again() -> None:
    finished = invocation.Finished("failed", '{"s":"error","e":{"message":"no stock"}}')
    with pytest.raises(TerminalError, match="no stock"):
        finished.replay(PLAIN_JSON, PLAIN_JSON)


@pytest.mark.parametrize(
    ("outcome", "what"),
    [
        ("not json", "it is not JSON (at character 0)"),
        ('{"s":"ok","v":1}trailing', "it has text after its JSON"),
        ("[1, 2]", "it is [1, 2], not a JSON object"),
        ('{"v":1}', "it has no 's' field"),
        ('{"s":"done","v":1}', "its status ('s') is 'done', neither 'ok' nor 'error'"),
        ('{"s":"ok"}', "it says 'ok' but holds no value"),
        ('{"s":"error","e":"boom"}', "its 'e' is 'boom', not dict"),
        ('{"s":"ok","v":{"__type__":"nope","__value__":1}}', "does not decode with codec"),
    ],
)
def test_an_unreadable_outcome_pauses_its_invocation_and_says_what_is_wrong(
    outcome: str, what: str
) -> None:
    store = MemoryJournalStore()
    completed(store, outcome)
    finished = invocation.Finished("completed", outcome)
    with pytest.raises(UnreadableJournalError) as caught:
        invocation.finished_outcome(store, "inv-1", finished, PLAIN_JSON, PLAIN_JSON)
    assert what in str(caught.value)
    assert store.meta["inv-1"]["status"] == "paused"
    assert store.meta["inv-1"]["outcome"] == outcome  # nothing stored is lost
