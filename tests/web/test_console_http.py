"""The console over HTTP, in process (httpx's ASGI transport), on the real Redis: the token,
the CSRF check, the Host check, read-only and hidden values, the JSON API and /metrics,
actions and bulk actions, and a mount under a path prefix.

Invocations are made with ``apply()`` (journaled in Redis, no worker); what a resume
publishes waits in the test's queue, unrun (``test_browser`` runs a worker).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount

from celery_durable import admin, get_invocation
from celery_durable.cli import durable
from celery_durable.runtime import runtime_for
from celery_durable.web import create_app
from tests.processes import ROOT, environment, free_port, wait_for
from tests.web.proj import APPROVAL, ENV_PREFIX, HOSTILE, IMG_VALUE, PAUSING, broken_key

BASE = "http://127.0.0.1"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def client(asgi: Any, base: str = BASE) -> httpx.Client:
    """A client of ``asgi`` in this process (httpx drives the ASGI app in a thread)."""
    return httpx.Client(transport=_Transport(asgi), base_url=base, follow_redirects=False)


class _Transport(httpx.BaseTransport):
    """httpx's ASGI transport, from sync code."""

    def __init__(self, asgi: Any) -> None:
        self._asgi = httpx.ASGITransport(app=asgi)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return anyio.run(call)


def completed(app: Celery, task_id: str) -> None:
    app.tasks[PAUSING].apply(args=(f"o-{task_id}",), task_id=task_id).get()


def paused(app: Celery, redis_client: redis.Redis, key_prefix: str, task_id: str) -> None:
    redis_client.set(broken_key(key_prefix, "charge"), 1)
    app.tasks[PAUSING].apply(args=("o-p",), task_id=task_id)
    redis_client.delete(broken_key(key_prefix, "charge"))


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF value"
    return found.group(1)


@pytest.fixture
def web(app: Celery) -> Iterator[httpx.Client]:
    with client(create_app(app)) as http:
        yield http


# -- Pages and the API ------------------------------------------------------------------------


def test_the_list_shows_invocations_newest_first_with_counts(
    app: Celery, web: httpx.Client
) -> None:
    completed(app, "inv-old")
    time.sleep(0.01)
    app.tasks[HOSTILE].apply(args=("o-2",), task_id="inv-new")
    app.tasks[HOSTILE].apply(args=("o-2",), task_id="inv-new")
    page = web.get("/")
    assert page.status_code == 200
    assert page.text.index("inv-new") < page.text.index("inv-old")
    assert "server-timing" in page.headers
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    only = web.get("/", params={"status": "completed"}).text
    assert "inv-old" in only and "inv-new" in only
    assert "inv-old" not in web.get("/", params={"task": HOSTILE}).text
    assert "inv-old" not in web.get("/", params={"q": "new"}).text


def test_the_json_api_prints_what_the_cli_prints(app: Celery, web: httpx.Client) -> None:
    completed(app, "inv-1")
    runner = CliRunner()
    context = CLIContext(app=app, no_color=True, workdir=None)
    shown = json.loads(runner.invoke(durable, ["show", "inv-1", "--json"], obj=context).stdout)
    listed = json.loads(runner.invoke(durable, ["ls", "--json"], obj=context).stdout)
    assert web.get("/api/invocation", params={"id": "inv-1"}).json() == shown
    assert web.get("/api/invocations").json() == listed
    assert web.get("/api/invocation", params={"id": "nope"}).status_code == 404
    assert web.get("/api/invocations", params={"limit": "5000"}).status_code == 400
    assert web.get("/api/counts").json() == {"running": 0, "suspended": 0, "paused": 0}


def test_metrics_count_the_live_statuses_in_prometheus_text(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    metrics = web.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'celery_durable_invocations{status="paused"} 1\n' in metrics.text
    assert 'celery_durable_invocations{status="running"} 0\n' in metrics.text
    assert "# TYPE celery_durable_invocations gauge" in metrics.text


def test_the_invocation_page_has_the_timeline_values_and_tracebacks(
    app: Celery, web: httpx.Client
) -> None:
    app.tasks[HOSTILE].apply(args=("o-1",), task_id="inv-h")
    html = web.get("/invocation", params={"id": "inv-h"}).text
    assert "&lt;script&gt;window.__xss" in html  # the step's name, escaped
    assert html.count('class="step"') == 2
    value = web.get("/invocation/step", params={"id": "inv-h", "index": "0", "partial": "1"})
    assert "&lt;img src=x onerror=" in value.text  # its value, escaped
    error = web.get("/invocation/step", params={"id": "inv-h", "index": "1"}).text  # a page
    assert "Traceback (most recent call last)" in error  # the failed step's traceback
    assert "&lt;b&gt;bold&lt;/b&gt;" in error
    for text in (html, value.text, error):
        assert "<img" not in text and "<script>window" not in text and "<b>" not in text
    assert web.get("/invocation", params={"id": "nope"}).status_code == 404
    assert web.get("/invocation/step", params={"id": "inv-h", "index": "9"}).status_code == 404


def test_a_page_says_the_steps_were_dropped_after_the_journal_retention(app: Celery) -> None:
    app.conf.durable_journal_retention = 0  # read at the app's first durable use, below
    completed(app, "inv-d")
    with client(create_app(app)) as web:
        html = web.get("/invocation", params={"id": "inv-d"}).text
        shown = web.get("/api/invocation", params={"id": "inv-d"}).json()
    assert "Steps: dropped after journal retention" in html
    assert "No journal entries yet" not in html
    # Neither resume nor restart can run it again without its steps: no buttons for them.
    assert "Run again from the start" not in html
    assert (shown["steps"], shown["steps_dropped"], shown["status"]) == ([], True, "completed")


def test_a_completed_invocation_is_shown_from_its_packed_steps(
    app: Celery, web: httpx.Client, redis_client: redis.Redis
) -> None:
    completed(app, "inv-p")
    keys = runtime_for(app).store._keys.invocation("inv-p")  # type: ignore[attr-defined]
    kinds = {"meta": keys.meta, "journal": keys.journal, "call": keys.call, "steps": keys.steps}
    found = {kind for kind, key in kinds.items() if redis_client.exists(key)}
    assert found == {"meta", "steps"}  # the journal and the call, packed at finish
    html = web.get("/invocation", params={"id": "inv-p"}).text
    assert html.count('class="step"') == 2
    assert "reserve" in html and "charge" in html
    step = web.get("/invocation/step", params={"id": "inv-p", "index": "1", "partial": "1"})
    assert step.status_code == 200 and "charge" in step.text
    shown = web.get("/api/invocation", params={"id": "inv-p"}).json()
    assert ([s["name"] for s in shown["steps"]], shown["steps_dropped"]) == (
        ["reserve", "charge"], False,
    )  # fmt: skip
    assert "Run again from the start" in html  # a restart reads the packed steps


def test_a_timer_a_finished_invocation_never_needed_is_shown_unused(
    app: Celery, web: httpx.Client
) -> None:
    # A sleep that lost an any(): still due in an hour when the invocation completed.
    from celery_durable.journal.entries import encode_entry
    from celery_durable.journal.store import StartRequest

    store = runtime_for(app).store
    started = store.start("inv-t", StartRequest(APPROVAL, "fp", 1, 30.0, "h:1"))
    now = time.time()
    until = json.dumps({"until": int((now + 3600) * 1000)})
    store.append("inv-t", started.fence, 0, encode_entry("sleep", "timeout", now, now, "json",
                                                         until), False)  # fmt: skip
    store.finish("inv-t", started.fence, "completed", '{"s":"ok","v":1}', 600)
    html = web.get("/invocation", params={"id": "inv-t"}).text
    assert 'class="status s-unused">unused<' in html
    assert "not needed" in html
    assert "due in" not in html and "s-waiting" not in html


def test_hidden_values_show_shapes_on_pages_and_in_the_api(app: Celery) -> None:
    app.tasks[HOSTILE].apply(args=("o-secret",), task_id="inv-h")
    with client(create_app(app, hide_values=True)) as web:
        html = web.get("/invocation", params={"id": "inv-h"}).text
        for index in ("0", "1"):
            html += web.get("/invocation/step", params={"id": "inv-h", "index": index}).text
        record = web.get("/api/invocation", params={"id": "inv-h"}).json()
        listed = web.get("/api/invocations").text
    for text in (html, json.dumps(record), listed):
        assert "o-secret" not in text
        assert "onerror" not in text  # the value, and the error's message
        assert "Traceback" not in text
    assert "values hidden" in html
    assert record["steps"][0]["value"] == {"html": f"str ({len(IMG_VALUE)} chars)"}
    assert record["steps"][1]["error"]["type"] == "ValueError"
    assert record["result"] == {"echo": {"html": f"str ({len(IMG_VALUE)} chars)"},
                                "order": "str (8 chars)"}  # fmt: skip


# -- Security ---------------------------------------------------------------------------------


def test_with_a_token_nothing_answers_without_it(app: Celery) -> None:
    completed(app, "inv-1")
    asgi = create_app(app, token="s3cret-token")
    with client(asgi) as web:
        for path in ("/", "/invocation?id=inv-1", "/api/invocations", "/api/counts", "/metrics",
                     "/bulk", "/?partial=1"):  # fmt: skip
            refused = web.get(path, headers={"accept": "text/html"})
            assert refused.status_code == 401, path
            assert PAUSING not in refused.text and "reserve" not in refused.text  # no data
        assert web.get("/api/counts", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert web.get("/?token=wrong", headers={"accept": "text/html"}).status_code == 401
        assert web.get("/static/console.css").status_code == 200  # the login form's style

        assert web.get("/api/counts", headers={"authorization": "Bearer s3cret-token"}).is_success
        given = web.get("/invocation?id=inv-1&token=s3cret-token")
        assert given.status_code == 303
        assert given.headers["location"] == "/invocation?id=inv-1"  # the token leaves no trace
        cookie = given.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "s3cret-token" not in cookie  # a digest of it
        assert "inv-1" in web.get("/invocation?id=inv-1").text  # the cookie is kept


def test_the_login_form_takes_the_token(app: Celery) -> None:
    with client(create_app(app, token="s3cret-token")) as web:
        wrong = web.post("/login", data={"token": "nope", "next": "/bulk"})
        assert wrong.status_code == 401 and "That is not the token" in wrong.text
        right = web.post("/login", data={"token": "s3cret-token", "next": "//evil.example/"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        assert web.get("/api/counts").is_success


def test_a_change_needs_this_browsers_csrf_value(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    csrf = csrf_of(web.get("/invocation", params={"id": "inv-p"}).text)
    form = {"id": "inv-p", "confirmed": "yes"}
    assert web.post("/actions/resume", data=form).status_code == 403
    assert web.post("/actions/resume", data={**form, "csrf": "0" * 64}).status_code == 403
    foreign = web.post("/actions/resume", data={**form, "csrf": csrf},
                       headers={"origin": "https://evil.example"})  # fmt: skip
    assert foreign.status_code == 403
    assert get_invocation(app, "inv-p").status == "paused"  # type: ignore[union-attr]
    done = web.post("/actions/resume", data={**form, "csrf": csrf})
    assert done.status_code == 303
    assert "Resumed invocation inv-p (it was paused)" in web.get(done.headers["location"]).text


def test_without_a_token_only_loopback_host_names_are_answered(app: Celery) -> None:
    asgi = create_app(app, allowed_hosts={"127.0.0.1", "localhost"})
    with client(asgi) as web:
        assert web.get("/").status_code == 200
    with client(asgi, "http://rebound.example:8765") as web:
        assert web.get("/").status_code == 421


def test_the_ui_command_refuses_another_address_without_a_token(app: Celery) -> None:
    context = CLIContext(app=app, no_color=True, workdir=None)
    result = CliRunner().invoke(durable, ["ui", "--host", "0.0.0.0"], obj=context, env={
        "CELERY_DURABLE_UI_TOKEN": ""})  # fmt: skip
    assert result.exit_code == 2
    assert "refusing to serve the console on 0.0.0.0 without a token" in result.stderr


def waiting_awakeable(app: Celery, task_id: str) -> str:
    """An invocation whose step 0 is an awakeable still to come; its id."""
    from celery_durable.journal.store import StartRequest
    from celery_durable.runtime import runtime_for

    store = runtime_for(app).store
    started = store.start(task_id, StartRequest(APPROVAL, "fp", 1, 30.0, "h:1"))
    store.append(task_id, started.fence, 0,
                 '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}',
                 False)  # fmt: skip
    details = admin.describe_invocation(app, task_id)
    assert details is not None
    return details.awakeable_ids[0]


def test_read_only_shows_no_action_and_accepts_none(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    awakeable_id = waiting_awakeable(app, "inv-a")
    with client(create_app(app, read_only=True)) as web:
        step = {"id": "inv-a", "index": "0"}
        for page in (web.get("/invocation", params={"id": "inv-a"}),
                     web.get("/invocation/step", params=step)):  # fmt: skip
            assert page.status_code == 200
            assert awakeable_id not in page.text  # it would let the reader complete it
        html = web.get("/invocation", params={"id": "inv-p"}).text
        assert "read-only" in html
        assert "/actions/" not in html and "Bulk actions" not in html
        csrf = web.cookies.get("durable_csrf")
        for action in ("resume", "cancel"):
            refused = web.post(f"/actions/{action}", data={"id": "inv-p", "confirmed": "yes",
                                                          "csrf": csrf or ""})  # fmt: skip
            assert refused.status_code in (404, 405)
        assert web.get("/bulk").status_code == 403
    assert get_invocation(app, "inv-p").status == "paused"  # type: ignore[union-attr]


def test_importing_celery_durable_does_not_import_the_console() -> None:
    code = (
        "import sys, celery_durable, celery_durable.cli\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'jinja2', 'uvicorn'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- Actions ----------------------------------------------------------------------------------


def post(web: httpx.Client, path: str, **fields: Any) -> httpx.Response:
    if web.cookies.get("durable_csrf") is None:
        web.get("/")  # the first page sets it
    return web.post(path, data={"csrf": web.cookies["durable_csrf"], **fields})


def test_every_action_asks_first_then_does_what_the_cli_does(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    asked = post(web, "/actions/resume", id="inv-p")
    assert asked.status_code == 200 and "Resume invocation inv-p?" in asked.text
    assert get_invocation(app, "inv-p").status == "paused"  # type: ignore[union-attr]
    assert post(web, "/actions/resume", id="inv-p", confirmed="yes").status_code == 303

    completed(app, "inv-r")
    refused = post(web, "/actions/resume", id="inv-r", confirmed="yes")
    assert refused.status_code == 409  # the CLI's own message
    assert "only a paused or failed invocation can be resumed" in refused.text

    made = post(web, "/actions/restart", id="inv-r", from_step="1", confirmed="yes")
    assert made.status_code == 303
    new_id = re.search(r"id=([^&]+)", made.headers["location"]).group(1)  # type: ignore[union-attr]
    assert get_invocation(app, new_id).status == "paused"  # type: ignore[union-attr]
    assert "restart it from a step between 0" in post(
        web, "/actions/restart", id="inv-r", from_step="9", confirmed="yes").text  # fmt: skip

    assert post(web, "/actions/forget", id="inv-r", confirmed="yes").status_code == 303
    assert get_invocation(app, "inv-r") is None
    assert "nothing to forget" in post(web, "/actions/forget", id="inv-r", confirmed="yes").text


def test_cancel_asks_first_then_cancels_or_kills_as_the_cli_does(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    page = web.get("/invocation", params={"id": "inv-p"}).text
    assert 'action="/actions/cancel"' in page
    asked = post(web, "/actions/cancel", id="inv-p", reason="out of stock")
    assert asked.status_code == 200
    assert "Cancel invocation inv-p?" in asked.text and "out of stock" in asked.text
    assert "Keep it" in asked.text  # going back is not another "cancel"
    assert get_invocation(app, "inv-p").cancel_reason is None  # type: ignore[union-attr]
    done = post(web, "/actions/cancel", id="inv-p", reason="out of stock", confirmed="yes")
    assert done.status_code == 303
    inv = get_invocation(app, "inv-p")
    assert inv is not None and inv.cancel_reason == "out of stock"  # released, woken

    killed = post(web, "/actions/cancel", id="inv-p", kill="yes")
    assert "Kill invocation inv-p?" in killed.text
    assert post(web, "/actions/cancel", id="inv-p", kill="yes", confirmed="yes").status_code == 303
    assert get_invocation(app, "inv-p").status == "cancelled"  # type: ignore[union-attr]
    assert 'action="/actions/cancel"' not in web.get("/invocation", params={"id": "inv-p"}).text
    again = post(web, "/actions/cancel", id="inv-p", confirmed="yes")
    assert again.status_code == 409 and "it has finished" in again.text  # the CLI's message


def test_an_awakeable_is_resolved_with_json_checked_in_the_form(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    from celery_durable.journal.store import StartRequest
    from celery_durable.runtime import runtime_for

    store = runtime_for(app).store
    started = store.start("inv-a", StartRequest(APPROVAL, "fp", 1, 30.0, "h:1"))
    store.append("inv-a", started.fence, 0,
                 '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}',
                 False)  # fmt: skip
    details = admin.describe_invocation(app, "inv-a")
    assert details is not None
    awakeable_id = details.awakeable_ids[0]
    assert awakeable_id in web.get("/invocation", params={"id": "inv-a"}).text

    fields = {"id": "inv-a", "awakeable_id": awakeable_id, "name": "approval", "index": "0"}
    bad = post(web, "/actions/resolve", value="{not json", **fields)
    assert bad.status_code == 409 and "The value is not JSON" in bad.text
    deep = post(web, "/actions/resolve", value="[" * 100_000, **fields)
    assert deep.status_code == 409 and "nested too deeply" in deep.text
    asked = post(web, "/actions/resolve", value='{"ok": true}', **fields)
    assert asked.status_code == 200
    assert "&#34;ok&#34;: true" in asked.text  # the value it will resolve with, shown first
    done = post(web, "/actions/resolve", value='{"ok": true}', confirmed="yes", **fields)
    assert done.status_code == 303
    inv = get_invocation(app, "inv-a")
    assert inv is not None and inv.steps[0].value == {"ok": True}
    late = post(web, "/actions/resolve", value="1", confirmed="yes", **fields)
    assert late.status_code == 409 and "Nothing was written" in late.text

    started = store.start("inv-b", StartRequest(APPROVAL, "fp", 1, 30.0, "h:1"))
    store.append("inv-b", started.fence, 0,
                 '{"k":"awakeable","n":"approval","t":0,"d":0,"s":"ok","v":{"id":"tok"}}',
                 False)  # fmt: skip
    other = admin.describe_invocation(app, "inv-b")
    assert other is not None
    fields = {"id": "inv-b", "awakeable_id": other.awakeable_ids[0], "name": "approval"}
    assert "Say why" in post(web, "/actions/reject", message=" ", **fields).text
    rejected = post(web, "/actions/reject", message="over budget", confirmed="yes", **fields)
    assert rejected.status_code == 303
    inv = get_invocation(app, "inv-b")
    assert inv is not None and inv.steps[0].error["message"] == "over budget"  # type: ignore[index]


# -- Bulk actions -----------------------------------------------------------------------------


def wait_job(web: httpx.Client, location: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = web.get(location).text
        if "finished" in text or "stopped" in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"the job at {location} did not finish")


def test_bulk_resume_asks_for_the_count_and_resumes_in_batches(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    for n in range(3):
        paused(app, redis_client, key_prefix, f"inv-{n}")
    preview = web.get("/bulk/preview", params={"kind": "resume", "task": PAUSING})
    assert 'This would touch <strong class="big">3</strong> invocations' in preview.text
    wrong = post(web, "/bulk/start", kind="resume", task=PAUSING, count="2")
    assert wrong.status_code == 409 and "Type 3, the number of invocations" in wrong.text
    assert admin.count_invocations(app)["paused"] == 3
    started = post(web, "/bulk/start", kind="resume", task=PAUSING, count="3")
    assert started.status_code == 303
    text = wait_job(web, started.headers["location"])
    assert "<strong>3</strong> done" in text
    assert all(get_invocation(app, f"inv-{n}").paused_reason.startswith("resumed")  # type: ignore[union-attr]
               for n in range(3))  # fmt: skip


def test_bulk_purge_deletes_the_failed_ones_older_than_asked(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    redis_client.set(broken_key(key_prefix, "reserve"), 1)
    for n in range(3):
        app.tasks[PAUSING].apply(args=(f"o-{n}",), task_id=f"bad-{n}")
    redis_client.delete(broken_key(key_prefix, "reserve"))
    completed(app, "good")
    time.sleep(1.1)
    preview = web.get("/bulk/preview", params={"kind": "purge", "older_than": "1s"})
    assert 'data-expect="3"' in preview.text
    now = re.search(r'name="now" value="([^"]+)"', preview.text).group(1)  # type: ignore[union-attr]
    started = post(web, "/bulk/start", kind="purge", older_than="1s", now=now, count="3")
    assert started.status_code == 303
    assert "<strong>3</strong> done" in wait_job(web, started.headers["location"])
    assert [get_invocation(app, f"bad-{n}") for n in range(3)] == [None] * 3
    assert get_invocation(app, "good") is not None
    assert (
        web.get("/bulk/preview", params={"kind": "purge", "older_than": "soon"}).status_code == 400
    )


# -- Mounted in another site ------------------------------------------------------------------


def test_the_console_works_mounted_under_a_path_prefix(
    app: Celery, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    site = Starlette(routes=[Mount("/ops/durable", app=create_app(app, token="t0ken"))])
    with client(site) as web:
        assert web.get("/ops/durable/").status_code == 401
        login = web.get("/ops/durable/invocation?id=inv-p&token=t0ken")
        assert login.headers["location"] == "/ops/durable/invocation?id=inv-p"
        assert "Path=/ops/durable" in login.headers["set-cookie"]
        html = web.get("/ops/durable/invocation?id=inv-p").text
        assert 'href="/ops/durable/static/console.css"' in html
        assert 'action="/ops/durable/actions/resume"' in html
        assert web.get("/ops/durable/static/console.js").status_code == 200
        done = post(web, "/ops/durable/actions/resume", id="inv-p", confirmed="yes")
        assert done.status_code == 303
        assert done.headers["location"].startswith("/ops/durable/invocation?id=inv-p")
        assert (
            web.get("/ops/durable/api/counts").json()["paused"] == 1
        )  # resumed: paused, published


def test_a_link_to_an_action_only_asks(
    app: Celery, web: httpx.Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    paused(app, redis_client, key_prefix, "inv-p")
    asked = web.get("/actions/forget", params={"id": "inv-p", "confirmed": "yes"})
    assert asked.status_code == 200 and "Forget invocation inv-p?" in asked.text
    restart = web.get("/actions/restart", params={"id": "inv-p", "from_step": "1"})
    assert "Restart invocation inv-p from step 1 (&#39;charge&#39;)?" in restart.text
    assert get_invocation(app, "inv-p") is not None
    started = web.get("/bulk/start", params={"kind": "resume", "task": PAUSING, "count": "1"})
    assert started.status_code == 405
    assert get_invocation(app, "inv-p").paused_reason.startswith("step")  # type: ignore[union-attr]


def test_the_ui_command_serves_the_console(key_prefix: str) -> None:
    """``celery -A proj durable ui`` as an operator runs it: it says where, and serves."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.web.proj", "durable", "ui",
         "--port", str(port), "--read-only"],
        cwd=ROOT, env=environment({ENV_PREFIX: key_prefix, "CELERY_DURABLE_UI_TOKEN": ""}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        answer = wait_for(lambda: _get(f"http://127.0.0.1:{port}/api/counts"), "the console")
        assert answer.json() == {"running": 0, "suspended": 0, "paused": 0}
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert "read-only" in page.text
        rebound = httpx.get(f"http://127.0.0.1:{port}/", headers={"host": "evil.example"})
        assert rebound.status_code == 421  # no token: only this machine's names
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"celery-durable console on http://127.0.0.1:{port}/ (read-only)" in output


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
