"""The console's pages: the list of invocations, an invocation, bulk actions, a job.

Each is a plain function that Starlette runs in its thread pool: the admin functions
they call talk to Redis synchronously.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from celery_durable import admin, display
from celery_durable.web import present
from celery_durable.web.console import Console

#: Invocations on a page of the list.
PAGE = 50
#: The most ids one page of a filtered list looks at before it offers the next page.
SCAN = 5000
#: Presets of the age filter: (value, label).
AGES = [("", "any age"), ("15m", "last 15 minutes"), ("1h", "last hour"),
        ("24h", "last 24 hours"), ("7d", "last 7 days")]  # fmt: skip
#: The one-click status filters: (value, label).
STATUS_LINKS = [("", "All"), ("running", "Running"), ("suspended", "Suspended"),
                ("paused", "Paused"), ("failed", "Failed"), ("completed", "Completed")]  # fmt: skip


def routes(console: Console) -> list[BaseRoute]:
    def listing(request: Request) -> Response:
        return list_page(console, request)

    def invocation(request: Request) -> Response:
        return invocation_page(console, request)

    def step(request: Request) -> Response:
        return step_page(console, request)

    def bulk(request: Request) -> Response:
        return bulk_page(console, request)

    def preview(request: Request) -> Response:
        return bulk_preview(console, request, dict(request.query_params), None)

    def job(request: Request) -> Response:
        return job_page(console, request)

    def login(request: Request) -> Response:
        return console.render(request, "login.html", target="/", wrong=False)

    return [
        Route("/", listing, name="list"),
        Route("/invocation", invocation, name="invocation"),
        Route("/invocation/step", step, name="step"),
        Route("/bulk", bulk, name="bulk"),
        Route("/bulk/preview", preview, name="bulk-preview"),
        Route("/bulk/job", job, name="bulk-job"),
        Route("/login", login, name="login"),
    ]


def list_page(console: Console, request: Request) -> Response:
    query = request.query_params
    filters = {
        "status": query.get("status", ""),
        "task": query.get("task", "").strip(),
        "q": query.get("q", "").strip(),
        "age": query.get("age", ""),
        "older": query.get("older", "").strip(),
    }
    now = time.time()
    problem = None
    page: admin.SummaryPage | None = None
    try:
        created_from = now - display.parse_duration(filters["age"]) if filters["age"] else None
        created_before = (
            now - display.parse_duration(filters["older"]) if filters["older"] else None
        )
        page = admin.list_summaries(
            console.celery_app,
            status=filters["status"] or None,
            task_name=filters["task"] or None,
            search=filters["q"] or None,
            created_from=created_from,
            created_before=created_before,
            cursor=query.get("cursor") or None,
            limit=PAGE,
            scan=SCAN,
        )
    except ValueError as exc:
        problem = str(exc)
    counts = admin.count_invocations(console.celery_app)
    context: dict[str, Any] = {
        "filters": filters,
        "page": page,
        "problem": problem,
        "counts": counts,
        "rows": [_row(summary, now) for summary in page.invocations] if page else [],
        "cursor": query.get("cursor", ""),
        "flash": console.take_flash(query.get("flash")),
        "ages": AGES,
        "status_links": STATUS_LINKS,
        "statuses": admin.STATUSES,
        "tasks": task_names(console.celery_app),
        "scan": SCAN,
    }
    if query.get("partial"):
        return console.render(request, "_list_live.html", **context)
    return console.render(request, "list.html", **context)


def _row(summary: Any, now: float) -> dict[str, Any]:
    return {
        "id": summary.id,
        "task": summary.task_name,
        "status": summary.status,
        "steps": summary.step_count,
        "age": display.age(summary.created_at, now),
        "created": display.clock(summary.created_at) if summary.created_at else "-",
        "updated": display.age(summary.updated_at, now),
        "awaits": display.awaits(summary),
    }


def invocation_page(console: Console, request: Request) -> Response:
    task_id = request.query_params.get("id")
    if not task_id:
        raise HTTPException(400, "Which invocation? Open it from the list (?id=...).")
    details = admin.describe_invocation(console.celery_app, task_id)
    if details is None:
        raise HTTPException(
            404,
            f"No invocation {task_id} is kept: it expired after durable_retention, was "
            "forgotten, or never started.",
        )
    view = present.invocation_view(details, console.hide_values)
    context: dict[str, Any] = {
        "v": view,
        "flash": console.take_flash(request.query_params.get("flash")),
    }
    if request.query_params.get("partial"):
        return console.render(request, "_invocation_live.html", **context)
    return console.render(request, "invocation.html", **context)


def step_page(console: Console, request: Request) -> Response:
    """What a timeline row shows when opened: the fragment its page fetches, or a page."""
    task_id = request.query_params.get("id", "")
    raw = request.query_params.get("index", "")
    details = admin.describe_invocation(console.celery_app, task_id) if task_id else None
    detail = None
    if details is not None and raw.isdigit():
        index, status = int(raw), None
        if any(s.index == index and s.kind == "call" for s in details.invocation.steps):
            child = admin.summaries_of(console.celery_app, [admin.child_id(task_id, index)])[0]
            status = None if child is None else child.status
        detail = present.step_detail(details, index, console.hide_values, status)
    if details is None or detail is None:
        raise HTTPException(404, f"No step {raw} of invocation {task_id} is kept.")
    template = "_step_body.html" if request.query_params.get("partial") else "step.html"
    return console.render(
        request, template, s=detail, inv=details.invocation, restartable=details.call is not None
    )


def bulk_page(console: Console, request: Request) -> Response:
    console.refuse_changes()
    return console.render(
        request,
        "bulk.html",
        jobs=console.jobs.recent(),
        tasks=task_names(console.celery_app),
        problem=None,
    )


def bulk_preview(
    console: Console, request: Request, form: dict[str, str], problem: str | None
) -> Response:
    """How many invocations a bulk action would touch now, and the form that runs it."""
    console.refuse_changes()
    try:
        plan = bulk_plan(console, form)
    except ValueError as exc:
        return console.render(
            request, "bulk.html", status=400, jobs=console.jobs.recent(),
            tasks=task_names(console.celery_app), problem=str(exc),
        )  # fmt: skip
    return console.render(
        request, "bulk_confirm.html", status=409 if problem else 200, plan=plan, problem=problem
    )


def bulk_plan(console: Console, form: dict[str, str]) -> dict[str, Any]:
    """What a bulk action touches now: its kind, description, ids and form fields.

    Raises:
        ValueError: the form names no task, or a duration that is not one.
    """
    kind = form.get("kind", "")
    if kind == "resume":
        task = form.get("task", "").strip()
        if not task:
            raise ValueError("Name the task whose paused invocations to resume.")
        ids = admin.select_ids(console.celery_app, "paused", task)
        what = f"every paused invocation of {task}"
        return {"kind": kind, "task": task, "older_than": "", "ids": ids, "now": "",
                "description": f"Resume {what}", "verb": "Resume"}  # fmt: skip
    if kind == "purge":
        spelt = form.get("older_than", "").strip()
        seconds = display.parse_duration(spelt)
        # The preview's own time, so that the count confirmed is the count it showed;
        # never a time to come, which would reach invocations younger than asked.
        now = min(float(form.get("now") or time.time()), time.time())
        ids = admin.select_ids(console.celery_app, "failed", created_before=now - seconds)
        return {"kind": kind, "task": "", "older_than": spelt, "ids": ids, "now": now,
                "description": f"Purge every failed invocation created more than {spelt} ago",
                "verb": "Purge"}  # fmt: skip
    raise ValueError("Choose a bulk action: resume paused invocations, or purge failed ones.")


def job_page(console: Console, request: Request) -> Response:
    job = console.jobs.get(request.query_params.get("id", ""))
    if job is None:
        raise HTTPException(
            404, "No such bulk job in this console process (jobs live in its memory)."
        )
    template = "_job_live.html" if request.query_params.get("partial") else "job.html"
    return console.render(request, template, job=job)


def task_names(celery_app: Any) -> list[str]:
    """The app's own task names (not Celery's built-in ones), for the task filter."""
    tasks = getattr(celery_app, "tasks", {})
    return sorted(name for name in list(tasks.keys()) if not name.startswith("celery."))
