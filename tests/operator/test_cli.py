"""``celery durable`` through click's CliRunner, on the real Redis: output, JSON, errors.

Invocations are made with ``apply()`` (journaled in Redis, no worker); what a resume or
a restart publishes waits in the test's own queue, unrun (``test_end_to_end`` runs them).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner

from celery_durable import AwakeableError, CodecError, get_invocation, resolve_awakeable
from celery_durable.cli import durable
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.journal.store import StartRequest
from celery_durable.runtime import release_runtime, runtime_for
from tests.operator.conftest import Invoke
from tests.operator.proj import APPROVAL, PAUSING, PIPELINE, broken_key, make_app
from tests.processes import RedisServer

INVOCATION_KEYS = {
    "id", "task_name", "status", "steps", "result", "error", "created_at", "updated_at",
    "seed", "paused_reason", "awaiting", "cancel_reason", "deadline", "concurrency_key",
    "concurrency_limit",
    "steps_until",
    "steps_dropped",
}  # fmt: skip
STEP_KEYS = {
    "index", "name", "kind", "status", "attempts", "value", "error", "started_at", "finished_at",
}  # fmt: skip
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def completed(app: Celery, task_id: str, order: str = "o-1") -> None:
    app.tasks[PIPELINE].apply(args=(order,), task_id=task_id).get()


def failed(app: Celery, redis_client: redis.Redis, key_prefix: str, task_id: str) -> None:
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    result = app.tasks[PIPELINE].apply(args=("o-2",), task_id=task_id)
    assert result.failed()
    redis_client.delete(broken_key(key_prefix, "charge"))


def loads(text: str) -> Any:
    return json.loads(text)


# -- ls and show ----------------------------------------------------------------------------


def test_ls_lists_newest_first_with_aligned_columns(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    completed(app, "inv-old")
    time.sleep(0.01)
    failed(app, redis_client, key_prefix, "inv-new")
    result = cli("ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "TASK", "STATUS", "STEPS", "AGE", "AWAITING"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["inv-new", PIPELINE, "failed", "2"],
        ["inv-old", PIPELINE, "completed", "3"],
    ]
    assert len({line.index(PIPELINE) for line in lines[1:]}) == 1  # one column
    assert "\x1b[" not in result.stdout  # no colour: the output is not a terminal

    only = cli("ls", "--status", "failed", "--json")
    assert [inv["id"] for inv in loads(only.stdout)] == ["inv-new"]
    assert loads(cli("ls", "--task", "no.such.task", "--json").stdout) == []
    assert cli("ls", "--limit", "1", "--json").stdout.count('"task_name"') == 1
    assert cli("ls", "--status", "paused").stdout == "No invocations with status paused.\n"


def test_ls_reads_summaries_and_only_the_journals_it_prints(spare_redis: RedisServer) -> None:
    """``ls`` reads no journal; ``ls --json --limit 1`` reads one, not a hundred."""
    app = make_app("ls-reads", spare_redis.url)
    try:
        for n in range(5):
            completed(app, f"inv-{n}", f"o-{n}")
        server = redis.Redis.from_url(spare_redis.url)

        def journal_reads(*args: str) -> int:
            server.config_resetstat()  # our own redis-server: nobody else's statistics
            result = CliRunner().invoke(
                durable, list(args), obj=CLIContext(app=app, no_color=True, workdir=None)
            )
            assert result.exit_code == 0, result.output
            stats = server.info("commandstats")
            return int(stats.get("cmdstat_lrange", {}).get("calls", 0))

        assert journal_reads("ls", "--limit", "2") == 0
        assert journal_reads("ls", "--status", "completed") == 0
        assert journal_reads("ls", "--json", "--limit", "1") == 1
        server.close()
    finally:
        release_runtime(app)
        app.close()


def test_ls_caps_its_limit(cli: Invoke) -> None:
    result = cli("ls", "--limit", "1001")
    assert result.exit_code == 2
    assert "1001 is not in the range 1<=x<=1000" in result.stderr


def test_show_prints_the_journal_as_a_timeline(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    failed(app, redis_client, key_prefix, "inv-1")
    inv = get_invocation(app, "inv-1")
    assert inv is not None
    result = cli("show", "inv-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "invocation  inv-1" in out
    assert f"task        {PIPELINE}" in out
    assert "status      failed" in out
    assert f"seed        {inv.seed}" in out
    rows = [line.split(None, 6) for line in out.splitlines() if re.match(r"\s*\d+\s+run\s", line)]
    assert [row[:5] for row in rows] == [
        ["0", "run", "reserve", "completed", "1"],
        ["1", "run", "charge", "failed", "1"],
    ]
    assert rows[0][6] == '"reserve:o-2"'
    assert rows[1][6] == "RuntimeError: a bug in charge"
    assert "error       RuntimeError: a bug in charge" in out


def test_show_json_is_the_invocation_record(app: Celery, cli: Invoke) -> None:
    completed(app, "inv-1")
    result = cli("show", "inv-1", "--json")
    assert result.exit_code == 0, result.output
    shown = loads(result.stdout)
    assert set(shown) == INVOCATION_KEYS
    assert (shown["id"], shown["task_name"], shown["status"]) == ("inv-1", PIPELINE, "completed")
    assert shown["result"]["steps"] == ["reserve:o-1", "charge:o-1", "ship:o-1"]
    assert (shown["error"], shown["paused_reason"], shown["awaiting"]) == (None, None, [])
    assert isinstance(shown["seed"], int)
    assert ISO.match(shown["created_at"]) and ISO.match(shown["updated_at"])
    steps = shown["steps"]
    assert [set(step) for step in steps] == [STEP_KEYS] * 3
    assert [(s["index"], s["name"], s["kind"], s["status"], s["attempts"]) for s in steps] == [
        (0, "reserve", "run", "completed", 1),
        (1, "charge", "run", "completed", 1),
        (2, "ship", "run", "completed", 1),
    ]
    assert steps[0]["value"] == "reserve:o-1"
    assert steps[0]["error"] is None
    assert ISO.match(steps[0]["started_at"]) and ISO.match(steps[0]["finished_at"])
    listed = loads(cli("ls", "--json").stdout)
    assert listed == [shown]


def test_show_of_a_paused_invocation_says_why_and_what_step_paused_it(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    app.tasks[PAUSING].apply(args=("o-3",), task_id="inv-p")  # eager: retries run at once
    shown = loads(cli("show", "inv-p", "--json").stdout)
    assert shown["status"] == "paused"
    assert "on_exhausted='pause'" in shown["paused_reason"]
    last = shown["steps"][-1]
    assert (last["name"], last["status"], last["attempts"]) == ("charge", "paused", 2)
    text = cli("show", "inv-p").stdout
    assert "paused      step 'charge' (index 1) gave up: all 2 attempts failed;" in text
    assert "an operator (resume)" in cli("ls").stdout


# -- Changing ---------------------------------------------------------------------------------


def test_forget_deletes_and_says_so(app: Celery, cli: Invoke) -> None:
    completed(app, "inv-1")
    result = cli("forget", "inv-1", "--json")
    assert (result.exit_code, loads(result.stdout)) == (0, {"id": "inv-1", "forgotten": True})
    again = cli("forget", "inv-1")
    assert again.exit_code == 1
    assert "no invocation inv-1 is kept" in again.stderr
    assert f"celery -A {app.main} durable ls" in again.stderr  # runnable as it stands


def test_purge_asks_first_and_deletes_only_that_status_older_than_asked(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    completed(app, "inv-done")
    failed(app, redis_client, key_prefix, "inv-failed")
    refused = cli("purge", "--status", "failed", "--older-than", "0s", input="n\n")
    assert refused.exit_code == 1
    assert "Delete every failed invocation" in refused.stderr
    assert get_invocation(app, "inv-failed") is not None

    kept = cli("purge", "--status", "failed", "--older-than", "1h", "--yes", "--json")
    assert loads(kept.stdout) == {"status": "failed", "older_than": 3600.0, "purged": []}
    result = cli("purge", "--status", "failed", "--older-than", "0", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Purged 1 failed invocation(s)" in result.stdout
    assert get_invocation(app, "inv-failed") is None
    assert get_invocation(app, "inv-done") is not None


def test_purge_json_lists_what_it_deleted_oldest_first(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    failed(app, redis_client, key_prefix, "inv-a")
    time.sleep(0.01)
    failed(app, redis_client, key_prefix, "inv-b")
    completed(app, "inv-done")
    result = cli("purge", "--status", "failed", "--older-than", "0", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert loads(result.stdout) == {
        "status": "failed", "older_than": 0.0, "purged": ["inv-a", "inv-b"],
    }  # fmt: skip
    assert result.stderr == ""  # nothing asked: --yes
    assert (get_invocation(app, "inv-a"), get_invocation(app, "inv-b")) == (None, None)
    assert get_invocation(app, "inv-done") is not None


@pytest.mark.parametrize(
    ("spelt", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0),
                           ("7d", 604800.0), ("2w", 1209600.0)],
)  # fmt: skip
def test_purge_reads_durations(app: Celery, cli: Invoke, spelt: str, seconds: float) -> None:
    result = cli("purge", "--status", "paused", "--older-than", spelt, "--yes", "--json")
    assert loads(result.stdout)["older_than"] == seconds


def test_a_wrong_duration_is_a_usage_error(cli: Invoke) -> None:
    result = cli("purge", "--status", "paused", "--older-than", "soon", "--yes")
    assert result.exit_code == 2
    assert "write it as 90s, 15m" in result.stderr


def test_resume_publishes_and_reports_what_it_dropped(
    app: Celery, cli: Invoke, redis_client: redis.Redis, key_prefix: str
) -> None:
    failed(app, redis_client, key_prefix, "inv-1")
    result = cli("resume", "inv-1", "--json")
    assert result.exit_code == 0, result.output
    done = loads(result.stdout)
    assert set(done) == {"id", "previous_status", "dropped_step", "published"}
    assert (done["id"], done["previous_status"], done["published"]) == ("inv-1", "failed", True)
    assert set(done["dropped_step"]) == STEP_KEYS
    assert (done["dropped_step"]["index"], done["dropped_step"]["name"]) == (1, "charge")
    inv = get_invocation(app, "inv-1")
    assert inv is not None
    assert (inv.status, [s.name for s in inv.steps]) == ("paused", ["reserve"])
    # Its call waits in the queue, under its own task id.
    message = json.loads(redis_client.lindex(f"{key_prefix}:kombu:{key_prefix}:q", 0) or "{}")
    assert message["headers"]["id"] == "inv-1"
    assert message["headers"]["task"] == PIPELINE

    again = cli("resume", "inv-1")  # paused now: resumable again, published again
    assert again.exit_code == 0, again.output
    assert "Resumed invocation inv-1 (it was paused)." in again.stdout


def test_resume_refuses_what_it_cannot_resume_and_says_what_to_do(app: Celery, cli: Invoke) -> None:
    completed(app, "inv-1")
    result = cli("resume", "inv-1")
    assert result.exit_code == 1
    assert "invocation inv-1 is completed; only a paused or failed invocation" in result.stderr
    assert f"celery -A {app.main} durable restart ID --from-step N" in result.stderr
    missing = cli("resume", "nope")
    assert missing.exit_code == 1
    assert "no invocation nope is kept" in missing.stderr


def test_restart_forks_the_journal_under_a_new_id(app: Celery, cli: Invoke) -> None:
    completed(app, "inv-1")
    result = cli("restart", "inv-1", "--from-step", "1", "--new-id", "inv-2", "--no-publish",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert loads(result.stdout) == {
        "id": "inv-2", "restarted_from": "inv-1", "from_step": 1, "published": False,
    }  # fmt: skip
    original, fork = get_invocation(app, "inv-1"), get_invocation(app, "inv-2")
    assert original is not None and fork is not None
    assert (fork.status, fork.task_name, fork.seed) == ("paused", PIPELINE, original.seed)
    assert [s.name for s in fork.steps] == ["reserve"]
    assert "restarted from invocation inv-1 at step 1" in (fork.paused_reason or "")

    taken = cli("restart", "inv-1", "--from-step", "1", "--new-id", "inv-2")
    assert taken.exit_code == 1
    assert "task id inv-2 already names an invocation" in taken.stderr
    too_far = cli("restart", "inv-1", "--from-step", "4")
    assert too_far.exit_code == 1
    assert "between 0 (run it all again) and 3, not 4" in too_far.stderr
    fresh = cli("restart", "inv-1", "--from-step", "0", "--no-publish")
    assert re.search(r"as [0-9a-f-]{36}\.", fresh.stdout)


def test_resolve_and_reject_complete_an_awakeable_once(app: Celery, cli: Invoke) -> None:
    store = runtime_for(app).store
    started = store.start("inv-1", StartRequest(APPROVAL, "fp", 1, 30.0, "test:1"))
    entry = '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}'
    store.append("inv-1", started.fence, 0, entry, False)
    store.release("inv-1", started.fence)
    awakeable = str(AwakeableId("inv-1", 0, "tok"))

    result = cli("resolve", awakeable, '{"approved_by": "ada"}', "--json")
    assert result.exit_code == 0, result.output
    assert loads(result.stdout) == {"awakeable_id": awakeable, "completed": True}
    inv = get_invocation(app, "inv-1")
    assert inv is not None and inv.steps[0].value == {"approved_by": "ada"}

    late = cli("reject", awakeable, "too late")
    assert late.exit_code == 1
    assert "was completed before" in late.stderr
    # Not "completed before" when the journal is not there: what a wrong -A finds.
    elsewhere = cli("resolve", str(AwakeableId("inv-2", 0, "tok")), "1")
    assert elsewhere.exit_code == 1
    assert "its invocation inv-2 is not kept in this app's journals" in elsewhere.stderr
    assert "completed before" not in elsewhere.stderr
    assert cli("resolve", awakeable, "not json").exit_code == 2
    wrong = cli("resolve", "awk1.nope", "1")
    assert wrong.exit_code == 1
    assert "is not an awakeable id" in wrong.stderr


def test_reject_json_fails_an_awakeable_once_and_says_when_it_wrote_nothing(
    app: Celery, cli: Invoke
) -> None:
    store = runtime_for(app).store
    started = store.start("inv-1", StartRequest(APPROVAL, "fp", 1, 30.0, "test:1"))
    entry = '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}'
    store.append("inv-1", started.fence, 0, entry, False)
    store.release("inv-1", started.fence)
    awakeable = str(AwakeableId("inv-1", 0, "tok"))

    result = cli("reject", awakeable, "over budget", "--json")
    assert result.exit_code == 0, result.output
    assert loads(result.stdout) == {"awakeable_id": awakeable, "completed": True}
    inv = get_invocation(app, "inv-1")
    assert inv is not None
    error = inv.steps[0].error
    assert (inv.steps[0].status, error and error["type"], error and error["message"]) == (
        "failed", "TerminalError", "over budget",
    )  # fmt: skip

    again = cli("reject", awakeable, "twice", "--json")
    assert again.exit_code == 1
    assert loads(again.stdout) == {"awakeable_id": awakeable, "completed": False}
    assert "was completed before" in again.stderr
    inv = get_invocation(app, "inv-1")
    assert inv is not None and inv.steps[0].error is not None
    assert inv.steps[0].error["message"] == "over budget"  # the first completion stands


def test_redis_that_cannot_be_reached_is_an_error_that_says_what_to_check(
    cli: Invoke, app: Celery
) -> None:
    app.conf.durable_redis_url = "redis://127.0.0.1:1/0"
    release_runtime(app)
    result = cli("ls")
    assert result.exit_code == 1
    assert "Check that Redis is running" in result.stderr


def test_resolve_refuses_a_deeply_nested_value_and_a_huge_index_clearly(
    app: Celery, cli: Invoke
) -> None:
    awakeable = str(AwakeableId("inv-1", 0, "tok"))
    deep = cli("resolve", awakeable, "[" * 100_000 + "]" * 100_000)
    assert deep.exit_code == 2, deep.output
    assert "nests lists and dicts more than 100 deep" in deep.stderr
    assert deep.exception is None or isinstance(deep.exception, SystemExit)
    nested = cli("resolve", awakeable, "[" * 150 + "]" * 150)
    assert nested.exit_code == 1, nested.output
    assert "more than 100 deep" in nested.stderr
    for index in ("9" * 5000, "99999999999999999999", "²"):
        huge = cli("resolve", f"awk1.aW52LTE.{index}.tok", "1")
        assert huge.exit_code == 1, huge.output
        assert "is not an awakeable id" in huge.stderr
        assert huge.exception is None or isinstance(huge.exception, SystemExit)


def test_resolve_awakeable_refuses_a_deeply_nested_value_and_a_huge_index_clearly(
    app: Celery,
) -> None:
    awakeable = str(AwakeableId("inv-1", 0, "tok"))
    for depth in (101, 100_000):
        value: Any = []
        for _ in range(depth - 1):
            value = [value]
        with pytest.raises(CodecError, match="more than 100 deep"):
            resolve_awakeable(app, awakeable, {"v": value})
    with pytest.raises(AwakeableError, match="is not an awakeable id"):
        resolve_awakeable(app, f"awk1.aW52LTE.{'9' * 5000}.tok", 1)


def test_ls_and_show_escape_what_a_terminal_would_obey(app: Celery, cli: Invoke) -> None:
    evil = "\x1b[2J\x1b]0;owned\x07"  # clear the screen, retitle the terminal
    task_id = f"inv{evil}\nfake-row"
    store = runtime_for(app).store
    started = store.start(task_id, StartRequest(f"proj.task{evil}", "fp", 1, 30.0, "test:1"))
    entry = json.dumps(
        {"k": "run", "n": f"step{evil}\r\n", "t": 0, "d": 0, "s": "error",
         "e": {"type": f"Boom{evil}", "message": f"bad\u202e{evil}\x9b31m\nline two"}}
    )  # fmt: skip
    store.append(task_id, started.fence, 0, entry, False)
    error = {"type": "ValueError", "message": f"failed{evil}\nagain"}
    store.finish(task_id, started.fence, "failed", json.dumps({"s": "error", "e": error}), 60.0)

    listed = cli("ls")
    shown = cli("show", task_id)
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
            assert raw not in result.stdout
        assert "\\x1b[2J\\x1b]0;owned\\x07" in result.stdout
    assert len(listed.stdout.splitlines()) == 2  # the header and one row
    assert "inv\\x1b[2J\\x1b]0;owned\\x07\\nfake-row" in listed.stdout
    rows = [line for line in shown.stdout.splitlines() if line.startswith("0 ")]
    assert len(rows) == 1 and "\\u202e" in rows[0]


def test_json_awaiting_gives_iso_times_and_the_awakeable_id(app: Celery, cli: Invoke) -> None:
    store = runtime_for(app).store
    started = store.start("inv-1", StartRequest(APPROVAL, "fp", 1, 30.0, "test:1"))
    awakeable = '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}'
    until = time.time() + 3600
    timer = json.dumps(
        {"k": "sleep", "n": "timeout", "t": 0, "d": 0, "s": "ok", "v": {"until": int(until * 1000)}}
    )
    store.append("inv-1", started.fence, 0, awakeable, False)
    store.append("inv-1", started.fence, 1, timer, False)
    awaiting = [
        {"kind": "awakeable", "name": "approval", "index": 0},
        {"kind": "sleep", "name": "timeout", "index": 1, "until": until},
    ]
    assert store.suspend("inv-1", started.fence, json.dumps(awaiting), [0], until, "{}") == (
        "suspended"
    )
    for document in (
        loads(cli("show", "inv-1", "--json").stdout),
        loads(cli("ls", "--json").stdout)[0],
    ):
        first, second = document["awaiting"]
        assert first == {
            "kind": "awakeable", "name": "approval", "index": 0,
            "awakeable_id": str(AwakeableId("inv-1", 0, "tok")),
        }  # fmt: skip
        assert ISO.match(second["until"]), second
        assert abs(datetime.fromisoformat(second["until"]).timestamp() - until) < 0.001
    shown = cli("show", "inv-1").stdout
    assert f"durable resolve {AwakeableId('inv-1', 0, 'tok')} JSON" in shown


# -- cancel, and flow control in show ----------------------------------------------------------


def test_cancel_marks_wakes_and_says_so_and_refuses_a_finished_one(
    app: Celery, cli: Invoke
) -> None:
    store = runtime_for(app).store
    started = store.start("inv-s", StartRequest(PIPELINE, "fp", 1, 30.0, "h:1"))
    store.suspend("inv-s", started.fence, "[]", [], time.time() + 3600, "")
    done = cli("cancel", "inv-s", "--reason", "out of stock", "--json")
    assert done.exit_code == 0, done.output
    assert loads(done.stdout) == {
        "id": "inv-s", "previous_status": "suspended", "killed": False, "already": False,
        "children": [],
    }  # fmt: skip
    shown = cli("show", "inv-s")
    assert "cancelled   out of stock" in shown.stdout
    assert loads(cli("show", "inv-s", "--json").stdout)["cancel_reason"] == "out of stock"
    again = cli("cancel", "inv-s")
    assert again.exit_code == 0
    assert "was cancelled before" in again.stdout

    killed = cli("cancel", "inv-s", "--kill")
    assert killed.exit_code == 0 and "Killed invocation inv-s (it was suspended)" in killed.stdout
    refused = cli("cancel", "inv-s")
    assert refused.exit_code == 1
    assert "invocation inv-s is cancelled: it has finished" in refused.stderr
    gone = cli("cancel", "nobody")
    assert gone.exit_code == 1 and "nothing to cancel" in gone.stderr


def test_show_says_who_holds_a_key_and_who_waits(app: Celery, cli: Invoke) -> None:
    store = runtime_for(app).store
    for task_id in ("inv-a", "inv-b", "inv-c"):
        store.start(task_id, StartRequest(PIPELINE, "fp", 1, 30.0, "h:1", concurrency="1:acct"))
        store.acquire_slot("acct", task_id, 1)
    shown = cli("show", "inv-c")
    assert "key         'acct': waits, 2 of 2 in line; 1 of 1 slot(s) held" in shown.stdout
    assert "holders     inv-a" in shown.stdout
    assert "waiting     inv-b, inv-c" in shown.stdout
    document = loads(cli("show", "inv-a", "--json").stdout)
    assert (document["concurrency_key"], document["concurrency_limit"]) == ("acct", 1)
    assert document["concurrency"] == {
        "key": "acct", "holders": ["inv-a"], "waiting": ["inv-b", "inv-c"],
    }  # fmt: skip
    assert "holds one" in cli("show", "inv-a").stdout
