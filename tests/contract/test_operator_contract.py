"""The store contract of operators' changes: pause with attempts, resume, fork, purge."""

from __future__ import annotations

import time

import pytest

from celery_durable.errors import LeaseLost
from celery_durable.journal.store import Fork, JournalStore, Started, StartRequest

CALL = '{"task":"shop.checkout","args":["o-1"],"kwargs":{},"options":{"task_id":"inv"}}'
OK = '{"k":"run","n":"s%d","t":0,"d":0,"s":"ok","v":%d}'
FAILED = '{"k":"run","n":"charge","t":0,"d":0,"a":3,"s":"error","e":{"type":"ValueError"}}'
# A value that looks like a failure from the inside: only the entry's own status counts.
TRICKY = '{"k":"run","n":"x","t":0,"d":0,"s":"ok","v":{"s":"error","e":1,"x":",\\"s\\":\\"error"}}'
OUTCOME = '{"s":"error","e":{"type":"ValueError","message":"boom"}}'
ATTEMPT = '{"i":1,"n":"charge","a":2,"t":0,"e":{"type":"ValueError","message":"boom"},"l":2}'


def run(
    store: JournalStore, task_id: str = "inv", call: str = CALL, holder: str = "host:1"
) -> Started:
    request = StartRequest("shop.checkout", "fp", 11, 30.0, holder, call=call)
    started = store.start(task_id, request)
    assert started.state == "run", started
    return started


def ok(i: int) -> str:
    return OK % (i, i)


def meta(store: JournalStore, task_id: str = "inv") -> dict[str, str]:
    found = store.read(task_id)
    assert found is not None
    return found[0]


def journal(store: JournalStore, task_id: str = "inv") -> list[str]:
    found = store.read(task_id)
    assert found is not None
    return found[1]


# -- Pausing with the failed attempts of a step -------------------------------------------


def test_a_pause_can_record_the_attempts_of_the_step_that_paused_it(store: JournalStore) -> None:
    started = run(store, call="")
    store.append("inv", started.fence, 0, ok(0), False)
    assert store.pause("inv", started.fence, "exhausted", CALL, ATTEMPT) == "paused"
    stored = meta(store)
    assert (stored["status"], stored["attempt"], stored["call"]) == ("paused", ATTEMPT, CALL)
    assert "lease" not in stored
    assert journal(store) == [ok(0)]  # nothing journaled for the step


# -- Resume ---------------------------------------------------------------------------------


def test_resuming_a_paused_invocation_raises_its_fence_and_clears_attempts_and_deaths(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.pause("inv", started.fence, "exhausted", CALL, ATTEMPT)
    fence_before = int(meta(store)["fence"])

    done = store.resume("inv", "resumed by an operator")
    assert (done.state, done.status, done.call, done.dropped) == ("resumed", "paused", CALL, None)
    stored = meta(store)
    assert int(stored["fence"]) == fence_before + 1
    assert (stored["status"], stored["paused_reason"], stored["deaths"]) == (
        "paused", "resumed by an operator", "0",
    )  # fmt: skip
    assert "attempt" not in stored
    assert journal(store) == [ok(0)]
    with pytest.raises(LeaseLost):  # whatever held the old fence writes nothing more
        store.append("inv", started.fence, 1, ok(1), False)
    again = run(store, holder="host:2")  # the next start runs it from its journal
    assert (again.status, again.entries, again.attempt, again.deaths) == (
        "paused", [ok(0)], None, 0,
    )  # fmt: skip


def test_resuming_a_failed_invocation_drops_its_outcome_and_its_failed_last_step(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.append("inv", started.fence, 1, FAILED, False)
    store.finish("inv", started.fence, "failed", OUTCOME, 0.2, call=CALL)

    done = store.resume("inv", "resumed")
    assert (done.state, done.status, done.dropped, done.dropped_at) == (
        "resumed", "failed", FAILED, 1,
    )  # fmt: skip
    stored = meta(store)
    assert stored["status"] == "paused"
    assert "outcome" not in stored
    assert journal(store) == [ok(0)]
    assert store.list_ids("paused", 10) == ["inv"]
    time.sleep(0.3)  # past the failed invocation's retention: it no longer expires
    assert store.read("inv") is not None
    assert run(store).entries == [ok(0)]


def test_resuming_a_failed_invocation_keeps_a_last_step_that_succeeded(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, FAILED, False)  # caught by the body
    store.append("inv", started.fence, 1, TRICKY, False)
    store.finish("inv", started.fence, "failed", OUTCOME, 60, call=CALL)
    done = store.resume("inv", "resumed")
    assert (done.state, done.dropped, done.dropped_at) == ("resumed", None, -1)
    assert journal(store) == [FAILED, TRICKY]


@pytest.mark.parametrize("status", ["running", "completed", "cancelled", "suspended"])
def test_only_a_paused_or_failed_invocation_is_resumed(store: JournalStore, status: str) -> None:
    started = run(store)
    if status == "suspended":
        assert store.suspend("inv", started.fence, "[]", [], time.time() + 60, CALL) == status
    elif status != "running":
        store.finish("inv", started.fence, status, OUTCOME, 60)
    before = store.read("inv")
    done = store.resume("inv", "resumed")
    assert (done.state, done.status) == ("refused", status)
    assert store.read("inv") == before


def test_resuming_without_a_call_is_refused_unless_asked_not_to_publish(
    store: JournalStore,
) -> None:
    started = run(store, call="")
    store.finish("inv", started.fence, "failed", OUTCOME, 60)  # a hard time limit: no call
    assert (store.resume("inv", "r").state, meta(store)["status"]) == ("no-call", "failed")
    done = store.resume("inv", "r", require_call=False)
    assert (done.state, done.call, meta(store)["status"]) == ("resumed", "", "paused")


def test_resuming_a_missing_invocation_says_it_is_gone(store: JournalStore) -> None:
    assert store.resume("nope", "r").state == "gone"
    assert store.read("nope") is None


# -- Fork -----------------------------------------------------------------------------------


def test_a_fork_is_created_paused_with_the_entries_and_seed_it_was_given(
    store: JournalStore,
) -> None:
    awakeable = '{"k":"awakeable","n":"ok","t":0,"d":0,"s":"ok","v":{"id":"tok"}}'
    fork = Fork(
        task_name="shop.checkout",
        fingerprint="fp",
        seed=99,
        entries=[ok(0), awakeable],
        completions={"1": '{"s":"ok","v":true,"t":1.0}'},
        call=CALL,
        reason="restarted from inv at step 2",
    )
    assert store.fork("copy", fork) is True
    stored = meta(store, "copy")
    assert (stored["status"], stored["seed"], stored["call"], stored["paused_reason"]) == (
        "paused", "99", CALL, "restarted from inv at step 2",
    )  # fmt: skip
    assert store.list_ids("paused", 10) == ["copy"]
    started = run(store, "copy")
    assert (started.status, started.seed, started.entries, started.deaths) == (
        "paused", 99, [ok(0), awakeable], 0,
    )  # fmt: skip
    assert started.completions == {"1": '{"s":"ok","v":true,"t":1.0}'}
    assert store.fork("copy", fork) is False  # the id is taken now
    assert journal(store, "copy") == [ok(0), awakeable]


# -- Purge ----------------------------------------------------------------------------------


def test_forget_if_deletes_only_an_invocation_of_that_status_created_before_then(
    store: JournalStore,
) -> None:
    started = run(store)
    store.pause("inv", started.fence, "why")
    created = float(meta(store)["created_at"])
    assert store.forget_if("inv", "failed", created + 1) == 0  # another status
    assert store.forget_if("inv", "paused", created) == 0  # not older
    assert store.forget_if("inv", "paused", created + 1) == 1
    assert store.read("inv") is None
    assert store.list_ids(None, 10) == []
    assert store.forget_if("inv", "paused", created + 1) == -1


def test_listing_before_a_time_is_oldest_first_and_by_live_status(store: JournalStore) -> None:
    for task_id in ("a", "b", "c"):
        started = run(store, task_id)
        if task_id != "b":
            store.pause(task_id, started.fence, "why")
        time.sleep(0.01)
    created = {i: float(meta(store, i)["created_at"]) for i in "abc"}
    assert store.list_ids_before("paused", created["c"] + 1, 10) == ["a", "c"]
    assert store.list_ids_before(None, created["c"], 10) == ["a", "b"]
    assert store.list_ids_before(None, created["c"] + 1, 2, offset=1) == ["b", "c"]
    assert store.list_ids_before("running", created["a"], 10) == []


# -- Listing pages and summaries --------------------------------------------------------------


def test_a_page_lists_newest_first_and_goes_on_after_its_last_pair(store: JournalStore) -> None:
    for task_id in ("a", "b", "c", "d"):
        started = run(store, task_id)
        if task_id in "bd":
            store.pause(task_id, started.fence, "why")
        time.sleep(0.01)
    first = store.list_page(None, 3)
    assert [i for i, _ in first] == ["d", "c", "b"]
    assert first[0][1] == float(meta(store, "d")["created_at"])
    assert [i for i, _ in store.list_page(None, 3, after=first[-1])] == ["a"]
    assert store.list_page(None, 3, after=("", 0.0)) == []
    assert [i for i, _ in store.list_page("paused", 10)] == ["d", "b"]
    assert [i for i, _ in store.list_page("paused", 10, after=first[0])] == ["b"]
    assert store.list_page("suspended", 10) == []


def test_a_page_keeps_to_its_creation_times(store: JournalStore) -> None:
    for task_id in ("a", "b", "c"):
        run(store, task_id)
        time.sleep(0.01)
    created = {i: float(meta(store, i)["created_at"]) for i in "abc"}
    assert [i for i, _ in store.list_page(None, 10, created_from=created["b"])] == ["c", "b"]
    assert [i for i, _ in store.list_page(None, 10, created_before=created["c"])] == ["b", "a"]
    window = store.list_page(None, 10, created_from=created["b"], created_before=created["c"])
    assert [i for i, _ in window] == ["b"]
    assert store.list_page(None, 10, after=("b", created["b"]), created_from=created["b"]) == []


def test_invocations_created_at_the_same_time_are_listed_once_each_across_pages(
    store: JournalStore,
) -> None:
    for task_id in ("x1", "x2", "x3", "x4"):
        run(store, task_id)
    same = float(meta(store, "x1")["created_at"])
    for task_id in ("x2", "x3", "x4"):  # one creation time for all: ties go by id
        _set_created(store, task_id, same)
    seen: list[str] = []
    after = None
    while page := store.list_page(None, 1, after=after):
        seen += [i for i, _ in page]
        after = page[-1]
    assert seen == ["x4", "x3", "x2", "x1"]


def test_a_summary_has_the_listed_fields_and_the_journal_length_and_no_value(
    store: JournalStore,
) -> None:
    started = run(store)
    store.append("inv", started.fence, 0, ok(0), False)
    store.append("inv", started.fence, 1, ok(1), False)
    store.pause("inv", started.fence, "why", attempt=ATTEMPT)
    found = store.summaries(["inv", "missing"])
    assert found[1] is None
    assert found[0] is not None
    fields, length = found[0]
    assert length == 2
    assert set(fields) == {"task", "status", "created_at", "updated_at", "paused_reason",
                           "attempt"}  # fmt: skip
    assert (fields["task"], fields["status"], fields["paused_reason"]) == (
        "shop.checkout", "paused", "why",
    )  # fmt: skip
    assert store.summaries([]) == []


def test_live_statuses_are_counted(store: JournalStore) -> None:
    assert store.count_live() == {"running": 0, "suspended": 0, "paused": 0}
    for task_id in ("a", "b", "c"):
        started = run(store, task_id)
        if task_id == "a":
            store.pause(task_id, started.fence, "why")
        if task_id == "b":
            store.finish(task_id, started.fence, "completed", '{"s":"ok","v":1}', 60)
    assert store.count_live() == {"running": 1, "suspended": 0, "paused": 1}


def _set_created(store: JournalStore, task_id: str, created: float) -> None:
    """Give ``task_id`` another creation time, in the metadata and in the listing."""
    from celery_durable.keys import KeySpace
    from celery_durable.stores.memory import MemoryJournalStore
    from celery_durable.stores.redis import RedisJournalStore

    if isinstance(store, MemoryJournalStore):
        store.meta[task_id]["created_at"] = repr(created)
        return
    assert isinstance(store, RedisJournalStore)
    keys: KeySpace = store._keys
    store.client.hset(keys.invocation(task_id).meta, "created_at", repr(created))
    for key in keys.indexes(task_id):
        if store.client.zscore(key, task_id) is not None:
            store.client.zadd(key, {task_id: created})
