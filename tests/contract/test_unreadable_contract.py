"""The store contract of what comes from outside an execution: refused outcomes, and
completions that must prove they may complete what they name."""

from __future__ import annotations

import time

import pytest

from celery_durable.journal.store import JournalStore, Started, StartRequest

CALL = '{"task":"shop.checkout","args":["o-1"],"kwargs":{},"options":{"task_id":"inv"}}'
STEP = '{"k":"run","n":"s","t":0,"d":0,"s":"ok","v":1}'
OUTCOME = '{"s":"ok","v":"gASVLAAAAAAAAACMAm9zlIwGc3lzdGVtlJOUjAR0cnVllIWUUpQu","c":"pickle"}'


def run(store: JournalStore, task_id: str = "inv") -> Started:
    started = store.start(task_id, StartRequest("shop.checkout", "fp", 11, 30.0, "host:1"))
    assert started.state == "run", started
    return started


def finished(store: JournalStore, status: str = "completed", retention: float = 0.2) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, STEP, False)
    assert store.finish("inv", started.fence, status, OUTCOME, retention, call=CALL) is None


def meta(store: JournalStore, task_id: str = "inv") -> dict[str, str]:
    found = store.read(task_id)
    assert found is not None
    return found[0]


# -- Pausing a finished invocation whose outcome was refused -------------------------------


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_refused_outcome_pauses_its_invocation_without_expiry(
    store: JournalStore, status: str
) -> None:
    finished(store, status)
    assert store.pause_finished("inv", status, OUTCOME, "refused: codec 'pickle'") == "paused"
    stored = meta(store)
    assert (stored["status"], stored["paused_reason"]) == ("paused", "refused: codec 'pickle'")
    assert stored["outcome"] == OUTCOME  # kept, for people to see what was refused
    assert store.list_ids("paused", 10) == ["inv"]
    time.sleep(0.3)  # past its retention: a paused invocation waits for an operator
    assert store.read("inv") is not None
    assert store.resume("inv", "resumed by an operator").state == "resumed"
    again = run(store)  # resumed, it runs from its journal, and records its outcome anew
    assert (again.status, again.entries) == ("paused", [STEP])


def test_a_refused_outcome_pauses_nothing_once_its_status_changed(store: JournalStore) -> None:
    finished(store, "failed")
    assert store.pause_finished("inv", "completed", OUTCOME, "refused") == "failed"
    assert meta(store)["status"] == "failed"
    assert store.list_ids("paused", 10) == []


def test_a_refused_outcome_pauses_nothing_once_the_outcome_changed(store: JournalStore) -> None:
    finished(store)
    assert store.pause_finished("inv", "completed", '{"s":"ok","v":1}', "refused") == "completed"
    assert meta(store)["status"] == "completed"
    time.sleep(0.3)  # its retention still runs
    assert store.read("inv") is None


def test_a_refused_outcome_of_a_gone_invocation_pauses_nothing(store: JournalStore) -> None:
    assert store.pause_finished("nope", "completed", OUTCOME, "refused") == ""
    assert store.read("nope") is None


# -- Completing from outside: the proof, and entries that are not the one named -------------

OLD_CALL = '{"k":"call","n":"child","t":0,"d":0,"s":"ok","v":{"id": "inv/0", "task": "t"}}'
CALL = OLD_CALL.replace('"t"}}', '"t", "token": "c0ffee"}}')
AWAKEABLE = '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id": "s3cr3t"}}'
DONE = '{"s":"ok","v":7,"t":1.0}'


def journaled(store: JournalStore, *entries: str) -> None:
    started = run(store)
    for index, entry in enumerate(entries):
        store.append("inv", started.fence, index, entry, False)


def test_a_call_is_completed_with_its_token_not_with_its_guessable_child_id(
    store: JournalStore,
) -> None:
    journaled(store, CALL)
    assert store.complete("inv", 0, "call", "inv/0", DONE) == 0
    assert store.complete("inv", 0, "call", "c0ffe", DONE) == 0  # a part of it is not it
    assert store.completions("inv") == {}
    assert store.complete("inv", 0, "call", "c0ffee", DONE) == 1
    assert store.completions("inv") == {"0": DONE}


def test_a_call_journaled_before_calls_had_a_token_is_completed_by_its_child_id(
    store: JournalStore,
) -> None:
    journaled(store, OLD_CALL)
    assert store.complete("inv", 0, "call", "c0ffee", DONE) == 0
    assert store.complete("inv", 0, "call", "inv/0", DONE) == 1


@pytest.mark.parametrize("kind", ["run", "sleep", "", 'call","n'])
def test_a_completion_of_another_kind_writes_nothing(store: JournalStore, kind: str) -> None:
    journaled(store, AWAKEABLE)
    assert store.complete("inv", 0, kind, "s3cr3t", DONE) == 0
    assert store.completions("inv") == {}


def test_a_completion_without_a_proof_writes_nothing(store: JournalStore) -> None:
    journaled(store, CALL.replace("c0ffee", ""))
    assert store.complete("inv", 0, "call", "", DONE) == 0
    assert store.completions("inv") == {}


@pytest.mark.parametrize(
    "entry",
    [
        "not json at all",
        '{"k":"run","n":"big","t":0,"d":0,"s":"ok","v":[' + "[1]," * 100_000 + "1",
        '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id": "s3cr3t"',
        '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"error","e":{"id":"s3cr3t"}}',
        '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":["s3cr3t"]}',
        '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"di": "s3cr3t"}}',
        '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":5}',
        '{"k":"run","n":"approval","t":0,"d":0,"s":"ok","v":{"id": "s3cr3t"}}',
    ],
    ids=[
        "not-json",
        "huge-unfinished-run",
        "cut",
        "error",
        "list",
        "other-field",
        "number",
        "a-step-holding-the-id",
    ],
)
def test_a_completion_naming_an_entry_that_is_not_its_own_is_refused_cleanly(
    store: JournalStore, entry: str
) -> None:
    # Undecodable: a script that decoded it before checking it would fail, not refuse.
    journaled(store, entry)
    assert store.complete("inv", 0, "awakeable", "s3cr3t", DONE) == 0
    assert store.completions("inv") == {}
