"""The console in a real browser (Debian's Chromium, driven by Playwright), against the real
Redis and a worker subprocess: the list and its filters, a timeline with a retried step and
a child, resuming with the button, resolving an awakeable with the form, markup that must
not run, the token, and read-only mode.

One worker and two consoles serve the module: one as ``celery durable ui`` serves by
default, one with a token and ``--read-only``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from celery_durable.web import create_app
from tests.web.conftest import Served, World, serve
from tests.web.proj import (
    APPROVAL,
    CHILD,
    HOSTILE,
    IMG_ERROR,
    IMG_VALUE,
    PAUSING,
    RETRIED,
    SCRIPT_NAME,
    broken_key,
    runs_key,
)

TOKEN = "a-long-random-token-for-the-test"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def console(world: World) -> Iterator[Served]:
    served = serve(create_app(world.app))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def guarded(world: World) -> Iterator[Served]:
    served = serve(create_app(world.app, token=TOKEN, read_only=True))
    yield served
    served.stop()


def paused_invocation(world: World, order: str) -> str:
    world.client.set(broken_key(world.prefix, "charge"), 1)
    task_id = world.send(PAUSING, order)
    world.wait_status(task_id, "paused")
    return task_id


def listed(page: Page, task_id: str) -> Any:
    """The list's rows whose id is ``task_id`` exactly (not its children's)."""
    link = page.get_by_role("link", name=task_id, exact=True)
    return page.locator("table.invocations tbody tr").filter(has=link)


def test_the_list_shows_invocations_and_filters_them(
    world: World, console: Served, page: Page
) -> None:
    done = world.send(RETRIED, "o-list")
    world.wait_status(done, "completed")
    stuck = paused_invocation(world, "o-list-p")
    page.goto(f"{console.url}/")
    expect(listed(page, done)).to_have_count(1)
    expect(listed(page, f"{done}/1")).to_have_count(1)  # its child
    expect(listed(page, stuck)).to_have_count(1)
    expect(page.locator(".count.c-paused .n")).not_to_have_text("0")

    page.click("nav.quick >> text=Paused")  # the one-click status filter
    expect(listed(page, stuck)).to_have_count(1)
    expect(listed(page, done)).to_have_count(0)

    page.click("a.button:has-text('Clear')")
    page.fill("input[name=task]", RETRIED)
    page.click("button:has-text('Filter')")
    expect(listed(page, done)).to_have_count(1)
    expect(listed(page, f"{done}/1")).to_have_count(0)  # another task's
    expect(listed(page, stuck)).to_have_count(0)
    world.client.delete(broken_key(world.prefix, "charge"))


def test_the_list_refreshes_itself_until_that_is_paused(
    world: World, console: Served, page: Page
) -> None:
    fetches: list[str] = []
    page.on("request", lambda request: fetches.append(request.url) if "partial=1" in request.url
            else None)  # fmt: skip
    page.goto(f"{console.url}/?q=o-live")
    first = world.send(RETRIED, "o-live-1")
    world.wait_status(first, "completed")
    expect(listed(page, first)).to_have_count(1, timeout=TIMEOUT_MS)  # without a reload

    page.click("button[data-live-toggle]")
    expect(page.locator("[data-live-state]")).to_have_text("live refresh paused")
    second = world.send(RETRIED, "o-live-2")
    world.wait_status(second, "completed")
    before = len(fetches)
    page.wait_for_timeout(7_000)  # two refresh periods and more: none may come
    assert len(fetches) == before
    expect(listed(page, second)).to_have_count(0)

    page.click("button[data-live-toggle]")
    expect(listed(page, second)).to_have_count(1, timeout=TIMEOUT_MS)


def test_the_timeline_shows_the_retried_step_and_links_the_child_and_back(
    world: World, console: Served, page: Page
) -> None:
    task_id = world.send(RETRIED, "o-timeline")
    world.wait_status(task_id, "completed")
    page.goto(f"{console.url}/invocation?id={task_id}")
    fetch = page.locator("#step-0 > summary")
    expect(fetch).to_contain_text("fetch")
    expect(fetch.locator(".retries")).to_have_text("↻ 3")  # two failed attempts, then one
    expect(fetch.locator("line.mark")).to_have_count(2)
    bars = [float(page.locator(f"#step-{i} rect.bar").get_attribute("x").rstrip("%"))  # type: ignore[union-attr]
            for i in range(3)]  # fmt: skip
    assert bars == sorted(bars), bars  # placed by their start times
    expect(page.locator("#step-2 rect.bar")).to_have_class("bar b-completed")

    page.click("#step-0 > summary")
    expect(page.locator("#step-0 pre.json")).to_contain_text('"fetch:o-timeline"')
    page.click("#step-1 > summary")  # the child call
    page.click("#step-1 a.mono")
    child = f"{task_id}/1"
    expect(page.locator("h1")).to_contain_text(child)
    expect(page.locator(".facts")).to_contain_text(CHILD)
    page.click(f".facts a:has-text('{task_id}')")  # back to the parent
    expect(page.locator("h1")).to_contain_text(task_id)
    expect(page.locator("h1")).not_to_contain_text(child)


def test_a_paused_invocation_is_resumed_with_the_button_until_it_completes(
    world: World, console: Served, page: Page
) -> None:
    task_id = paused_invocation(world, "o-resume")
    world.client.delete(broken_key(world.prefix, "charge"))  # the fix is deployed
    page.goto(f"{console.url}/invocation?id={task_id}")
    expect(page.locator(".paused-card")).to_contain_text("gave up")
    expect(page.locator("#step-1 .status")).to_have_text("paused")
    page.click(".actions button:has-text('Resume')")
    expect(page.locator("h1")).to_have_text(f"Resume invocation {task_id}?")
    page.click("button:has-text('Yes, resume')")
    expect(page.locator(".flash")).to_contain_text(f"Resumed invocation {task_id} (it was paused)")
    # The page refreshes itself until the worker has finished it.
    expect(page.locator(".facts .status")).to_have_text("completed", timeout=TIMEOUT_MS)
    runs = {s: int(world.client.get(runs_key(world.prefix, "o-resume", s)) or 0)
            for s in ("reserve", "charge")}  # fmt: skip
    assert runs == {"reserve": 1, "charge": 3}  # reserve replayed; charge 2 failed + 1


def test_a_waiting_invocation_is_cancelled_with_the_button_and_ends_cancelled(
    world: World, console: Served, page: Page
) -> None:
    task_id = world.send(APPROVAL, "o-cancel")
    world.wait_status(task_id, "suspended")
    page.goto(f"{console.url}/invocation?id={task_id}")
    page.fill("form.cancel input[name=reason]", "the customer left")
    page.click("form.cancel button")
    expect(page.locator("h1")).to_have_text(f"Cancel invocation {task_id}?")
    expect(page.locator("pre.json")).to_have_text("the customer left")
    page.click("button:has-text('Yes, cancel')")
    expect(page.locator(".flash")).to_contain_text(f"Cancelled invocation {task_id}")
    # Woken at once, it raised the cancel where it waited: the page refreshes until then.
    expect(page.locator(".facts .status")).to_have_text("cancelled", timeout=TIMEOUT_MS)
    expect(page.locator(".facts")).to_contain_text("the customer left")
    expect(page.locator("form.cancel")).to_have_count(0)  # nothing left to cancel
    inv = world.wait_status(task_id, "cancelled")
    assert inv.error is not None and inv.error["type"] == "InvocationCancelled"


def test_an_awakeable_is_resolved_through_the_form(
    world: World, console: Served, page: Page
) -> None:
    task_id = world.send(APPROVAL, "o-approve")
    world.wait_status(task_id, "suspended")
    page.goto(f"{console.url}/invocation?id={task_id}")
    area = page.locator("form.resolve textarea")
    area.fill('{"approved_by": ')
    expect(page.locator("[data-json-state]")).to_contain_text("not JSON")
    page.click("form.resolve button")
    expect(page).to_have_url(f"{console.url}/invocation?id={task_id}")  # the browser held it
    area.fill('{"approved_by": "ada"}')
    page.click("form.resolve button")
    expect(page.locator("pre.json")).to_contain_text('"approved_by": "ada"')
    page.click("button:has-text('Yes, resolve')")
    expect(page.locator(".flash")).to_contain_text("Resolved awakeable 'approval' (#0)")
    inv = world.wait_status(task_id, "completed")
    assert inv.result == {"order": "o-approve", "answer": {"approved_by": "ada"}}


def test_markup_in_names_values_and_errors_is_shown_and_runs_nothing(
    world: World, console: Served, page: Page
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    task_id = world.send(HOSTILE, "o-xss")
    world.wait_status(task_id, "completed")
    page.goto(f"{console.url}/invocation?id={task_id}")
    for summary in page.locator("details.step > summary").all():
        summary.click()  # every value and error on the page
    expect(page.locator("#step-0 .name")).to_have_text(SCRIPT_NAME)  # shown as text
    expect(page.locator("#step-0 pre.json")).to_contain_text(json.dumps(IMG_VALUE))
    expect(page.locator("#step-1 .error-head")).to_contain_text(IMG_ERROR)
    expect(page.locator("#step-1 .name")).to_have_text("<b>bold</b>")
    page.goto(f"{console.url}/?q=o-xss")  # and the list
    expect(page.locator("table.invocations")).to_contain_text(task_id)
    page.goto(f"{console.url}/invocation?id={task_id}")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script, main b").count() == 0
    assert dialogs == []


def test_with_a_token_nothing_is_shown_without_it_and_all_with_it(
    world: World, guarded: Served, browser: Any
) -> None:
    task_id = world.send(RETRIED, "o-token")
    world.wait_status(task_id, "completed")
    stranger = browser.new_page()
    stranger.goto(f"{guarded.url}/invocation?id={task_id}")
    expect(stranger.locator("body")).to_contain_text("This console needs its token")
    expect(stranger.locator("body")).not_to_contain_text(RETRIED)
    response = stranger.goto(f"{guarded.url}/api/invocations")
    assert response is not None and response.status == 401
    stranger.goto(f"{guarded.url}/invocation?id={task_id}")
    stranger.fill("input[name=token]", "not the token")
    stranger.click("button:has-text('Open the console')")
    expect(stranger.locator(".problem")).to_have_text("That is not the token.")
    stranger.close()

    operator = browser.new_page()
    operator.goto(f"{guarded.url}/invocation?id={task_id}")
    operator.fill("input[name=token]", TOKEN)
    operator.click("button:has-text('Open the console')")
    expect(operator.locator(".facts")).to_contain_text(RETRIED)
    operator.goto(f"{guarded.url}/")  # the cookie keeps it
    expect(operator.locator("table.invocations")).to_contain_text(task_id)
    operator.close()


def test_read_only_mode_shows_no_action(world: World, guarded: Served, page: Page) -> None:
    task_id = paused_invocation(world, "o-readonly")
    world.client.delete(broken_key(world.prefix, "charge"))
    page.goto(f"{guarded.url}/invocation?id={task_id}&token={TOKEN}")
    expect(page.locator(".facts .status")).to_have_text("paused")
    expect(page.locator(".mode")).to_have_text("read-only")
    assert page.locator("form[action*='/actions/']").count() == 0
    assert page.locator("button:has-text('Resume')").count() == 0
    assert page.locator("nav a:has-text('Bulk actions')").count() == 0
