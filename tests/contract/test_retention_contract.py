"""The store contract of a finished invocation's two retentions: its steps (journal,
completions, call) for ``journal_retention``, its outcome for ``retention``."""

from __future__ import annotations

import time

from celery_durable.journal.store import JournalStore, StartRequest
from celery_durable.keys import MetaField as F
from tests.contract.test_operator_contract import CALL, FAILED, OUTCOME, journal, meta, ok, run

OK_OUTCOME = '{"s":"ok","v":3}'
#: What a finished invocation keeps when its steps are gone: exactly-once completion
#: (status, outcome, fingerprint, task), people (times) and fences (fence).
KEPT = {F.TASK, F.FINGERPRINT, F.STATUS, F.OUTCOME, F.CREATED_AT, F.UPDATED_AT, F.FENCE,
        F.STEPS_UNTIL}  # fmt: skip


def finished(
    store: JournalStore, journal_retention: float | None, status: str = "completed"
) -> int:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.mark_sent("inv", started.fence, 0)  # something in the completions hash
    outcome = OK_OUTCOME if status == "completed" else OUTCOME
    assert store.finish(
        "inv", started.fence, status, outcome, 60, call=CALL, journal_retention=journal_retention
    ) is None  # fmt: skip
    return started.fence


def test_the_call_is_kept_with_the_steps(store: JournalStore) -> None:
    finished(store, None)
    stored = meta(store)
    assert stored[F.CALL] == CALL
    assert F.STEPS_UNTIL not in stored  # both retentions are one: nothing to say
    assert journal(store) == [ok(0)]
    assert store.completions("inv") == {"0:sent": "1"}


def test_a_journal_retention_of_0_keeps_only_the_outcome(store: JournalStore) -> None:
    finished(store, 0)
    found = store.read("inv")
    assert found is not None
    stored, entries, completions = found
    assert set(stored) == KEPT, stored
    assert (stored[F.STATUS], stored[F.OUTCOME]) == ("completed", OK_OUTCOME)
    assert int(stored[F.STEPS_UNTIL]) <= time.time() * 1000 + 1
    assert (entries, completions) == ([], {})
    # Exactly-once completion: a later delivery of the same id gets the outcome.
    again = store.start("inv", StartRequest("shop.checkout", "fp", 11, 30.0, "host:2", call=CALL))
    assert (again.state, again.status, again.outcome) == ("done", "completed", OK_OUTCOME)
    # Reusing the id with other arguments is still refused.
    other = store.start("inv", StartRequest("shop.checkout", "fp2", 11, 30.0, "host:2"))
    assert other.state == "conflict"


def test_the_steps_expire_before_the_outcome(store: JournalStore) -> None:
    finished(store, 0.2)
    assert journal(store) == [ok(0)]
    assert meta(store)[F.CALL] == CALL
    time.sleep(0.35)
    found = store.read("inv")
    assert found is not None
    stored, entries, _ = found
    assert entries == []
    assert F.CALL not in stored
    assert stored[F.OUTCOME] == OK_OUTCOME
    done = store.start("inv", StartRequest("shop.checkout", "fp", 11, 30.0, "host:2"))
    assert (done.state, done.outcome) == ("done", OK_OUTCOME)


def test_a_journal_retention_longer_than_the_retention_is_the_retention(
    store: JournalStore,
) -> None:
    started = run(store)
    store.finish("inv", started.fence, "completed", OK_OUTCOME, 0.2, journal_retention=60)
    assert F.STEPS_UNTIL not in meta(store)
    time.sleep(0.3)
    assert store.read("inv") is None


def test_a_failed_invocation_whose_steps_were_dropped_is_not_resumed(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.append("inv", started.fence, 1, FAILED, False)
    store.finish("inv", started.fence, "failed", OUTCOME, 60, call=CALL, journal_retention=0)

    done = store.resume("inv", "resumed")
    assert (done.state, done.status) == ("dropped", "failed")
    stored = meta(store)  # nothing changed: it would run its steps again
    assert (stored[F.STATUS], stored[F.OUTCOME]) == ("failed", OUTCOME)
    assert store.list_ids("paused", 10) == []
    again = store.start("inv", StartRequest("shop.checkout", "fp", 11, 30.0, "host:2"))
    assert (again.state, again.status) == ("done", "failed")


def test_a_failed_invocation_resumed_before_its_steps_go_keeps_them(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.finish("inv", started.fence, "failed", OUTCOME, 60, call=CALL, journal_retention=0.3)

    done = store.resume("inv", "resumed")
    assert (done.state, done.call) == ("resumed", CALL)
    assert F.STEPS_UNTIL not in meta(store)
    time.sleep(0.4)  # past the journal retention it had: paused, it keeps its steps
    assert journal(store) == [ok(0)]
    assert meta(store)[F.CALL] == CALL


def test_an_unreadable_outcome_paused_before_its_steps_go_keeps_them(store: JournalStore) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.finish("inv", started.fence, "completed", "?", 60, call=CALL, journal_retention=0.3)

    assert store.pause_finished("inv", "completed", "?", "its outcome is unreadable") == "paused"
    assert F.STEPS_UNTIL not in meta(store)
    time.sleep(0.4)  # past the journal retention it had: paused, it keeps its steps
    assert journal(store) == [ok(0)]
    assert store.resume("inv", "resumed").state == "resumed"


def test_an_unreadable_outcome_paused_after_its_steps_went_is_not_resumed(
    store: JournalStore,
) -> None:
    started = run(store)
    store.finish("inv", started.fence, "completed", "?", 60, call=CALL, journal_retention=0)

    assert store.pause_finished("inv", "completed", "?", "its outcome is unreadable") == "paused"
    assert store.resume("inv", "resumed").state == "dropped"
