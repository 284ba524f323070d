"""Listings of summaries (``list_summaries``): filters, cursors, the scan budget, counts and
the selections of bulk actions, on the real Redis."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery

from celery_durable import admin
from tests.operator.proj import PAUSING, PIPELINE, broken_key


def make(app: Celery, task_id: str, task: str = PIPELINE) -> None:
    app.tasks[task].apply(args=(f"o-{task_id}",), task_id=task_id)
    time.sleep(0.002)  # distinct creation times, as invocations have in practice


def ids(page: admin.SummaryPage) -> list[str]:
    return [summary.id for summary in page.invocations]


def test_pages_go_newest_first_and_each_starts_where_the_last_ended(app: Celery) -> None:
    for n in range(5):
        make(app, f"inv-{n}")
    first = admin.list_summaries(app, limit=2)
    assert ids(first) == ["inv-4", "inv-3"]
    assert first.invocations[0].step_count == 3
    assert first.invocations[0].status == "completed"
    second = admin.list_summaries(app, limit=2, cursor=first.next_cursor)
    assert ids(second) == ["inv-2", "inv-1"]
    last = admin.list_summaries(app, limit=2, cursor=second.next_cursor)
    assert ids(last) == ["inv-0"]
    assert last.next_cursor is None


def test_filters_by_status_task_id_and_age(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    make(app, "ok-1")
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    make(app, "bad-1")
    make(app, "paused-1", PAUSING)
    redis_client.delete(broken_key(key_prefix, "charge"))
    make(app, "ok-2")
    assert ids(admin.list_summaries(app, status="failed")) == ["bad-1"]
    assert ids(admin.list_summaries(app, status="paused")) == ["paused-1"]
    assert ids(admin.list_summaries(app, task_name=PAUSING)) == ["paused-1"]
    assert ids(admin.list_summaries(app, search="ok-")) == ["ok-2", "ok-1"]
    created = admin.list_summaries(app, search="bad-1").invocations[0].created_at
    assert created is not None
    newer = admin.list_summaries(app, created_from=created.timestamp())
    assert ids(newer) == ["ok-2", "paused-1", "bad-1"]
    older = admin.list_summaries(app, created_before=created.timestamp())
    assert ids(older) == ["ok-1"]
    paused = admin.list_summaries(app, status="paused").invocations[0]
    assert paused.paused_reason and "gave up" in paused.paused_reason
    assert paused.step_count == 2  # the step that paused it counts, as in `show`
    assert admin.count_invocations(app) == {"running": 0, "suspended": 0, "paused": 1}


def test_a_filter_stops_at_its_scan_budget_and_its_cursor_goes_on_from_there(
    app: Celery,
) -> None:
    make(app, "match-old")
    for n in range(4):
        make(app, f"other-{n}")
    page = admin.list_summaries(app, search="match", scan=3)
    assert ids(page) == []
    assert page.scanned == 3
    assert page.next_cursor is not None
    rest = admin.list_summaries(app, search="match", scan=3, cursor=page.next_cursor)
    assert ids(rest) == ["match-old"]
    assert rest.next_cursor is None


def test_an_expired_invocation_is_dropped_from_the_listing(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    make(app, "kept")
    make(app, "expired")
    redis_client.delete(f"{key_prefix}:durable:{{expired}}:meta")
    assert ids(admin.list_summaries(app)) == ["kept"]
    assert redis_client.zscore(f"{key_prefix}:durable:index:all", "expired") is None


def test_bulk_selections_list_every_match(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    for n in range(3):
        make(app, f"p-{n}", PAUSING)
    make(app, "f-0")
    redis_client.delete(broken_key(key_prefix, "charge"))
    assert admin.select_ids(app, "paused", PAUSING) == ["p-2", "p-1", "p-0"]
    assert admin.select_ids(app, "paused", PIPELINE) == []
    assert admin.select_ids(app, "failed", created_before=time.time() + 1) == ["f-0"]
    assert admin.select_ids(app, "failed", created_before=time.time() - 3600) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "lost"}, "status='lost' must be one of"),
        ({"limit": 0}, "limit=0 must be a whole number from 1 to 1000"),
        ({"limit": 1001}, "limit=1001 must be a whole number from 1 to 1000"),
        ({"cursor": "yesterday"}, "cursor='yesterday' is not one a listing gave"),
        ({"cursor": "nan:x"}, "is not one a listing gave"),
    ],
)
def test_a_wrong_argument_says_which(app: Celery, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        admin.list_summaries(app, **kwargs)  # type: ignore[arg-type]


def test_a_purge_in_batches_deletes_what_one_purge_would(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    for n in range(5):
        make(app, f"f-{n}")
    redis_client.delete(broken_key(key_prefix, "charge"))
    now = time.time() + 1
    batches = []
    while batch := admin.purge_invocations(app, "failed", 0, now=now, limit=2):
        batches.append(batch)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(i for b in batches for i in b) == [f"f-{n}" for n in range(5)]
    with pytest.raises(ValueError, match="limit=0 must be"):
        admin.purge_invocations(app, "failed", 0, limit=0)
