"""The console's changes: resume, restart, forget, resolve, reject, cancel, and bulk jobs.

Each is a POST with a CSRF check, in two steps: the first shows what it will do and asks
for confirmation, the second (``confirmed=yes``) does it through the same admin function
as the ``celery durable`` command, so the rules and error messages are the same. None of
these routes exists in a read-only console.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from celery_durable import admin, display
from celery_durable.errors import DurableError, JournalUnavailableError
from celery_durable.web import pages, present
from celery_durable.web.bulk import BATCH, Job
from celery_durable.web.console import Console, build_url, form_of

Handler = Callable[[Console, Request, dict[str, str]], Response]


def routes(console: Console) -> list[BaseRoute]:
    def route(path: str, handler: Handler, asks: bool = True) -> Route:
        """``handler`` on POST; with ``asks``, also on GET, where it only ever asks (its
        question page changes nothing, whatever the address says)."""

        async def endpoint(request: Request) -> Response:
            if request.method == "GET":  # only ever the question: a link changes nothing
                form = {k: v for k, v in request.query_params.items() if k != "confirmed"}
            else:
                form = await form_of(request)
            return await run_in_threadpool(handler, console, request, form)

        return Route(path, endpoint, methods=["GET", "POST"] if asks else ["POST"])

    return [
        route("/actions/resume", resume),
        route("/actions/restart", restart),
        route("/actions/forget", forget),
        route("/actions/resolve", resolve),
        route("/actions/reject", reject),
        route("/actions/cancel", cancel),
        route("/bulk/start", start_bulk, asks=False),
    ]


def _confirmed(form: dict[str, str]) -> bool:
    return form.get("confirmed") == "yes"


def _ask(
    console: Console,
    request: Request,
    form: dict[str, str],
    action: str,
    question: str,
    explanation: str,
    *,
    value: str | None = None,
    problem: str | None = None,
    danger: bool = False,
    value_label: str = "Value",
    back_label: str = "Cancel",
) -> Response:
    """The confirmation page of ``action``: what it does, and a form that does it."""
    fields = {k: v for k, v in form.items() if k not in ("csrf", "confirmed")}
    return console.render(
        request,
        "confirm.html",
        status=409 if problem else 200,
        action=action,
        question=question,
        explanation=explanation,
        fields=fields,
        value=value,
        value_label=value_label,
        problem=problem,
        danger=danger,
        back_label=back_label,
        back=build_url(request.scope.get("root_path", ""), "/invocation", id=form.get("id")),
    )


def _done(console: Console, request: Request, task_id: str | None, message: str) -> Response:
    root = request.scope.get("root_path", "")
    key = console.flash(message)
    target = (
        build_url(root, "/invocation", id=task_id, flash=key)
        if task_id
        else build_url(root, "/", flash=key)
    )
    return RedirectResponse(target, status_code=303)


def _try(ask: Callable[..., Response], change: Callable[[], Any]) -> tuple[Any, Response | None]:
    """Run ``change``: its result, or the confirmation page again with the error that the
    admin function raised, word for word."""
    try:
        return change(), None
    except JournalUnavailableError:
        raise  # the console's page for an unreachable Redis
    except (DurableError, ValueError) as exc:
        return None, ask(problem=str(exc))


def resume(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id = form.get("id", "")

    def ask(problem: str | None = None) -> Response:
        return _ask(
            console, request, form, "resume", f"Resume invocation {task_id}?",
            "Its recorded call is published again under its task id, and a worker runs it "
            "from its journal: finished steps replay. A failed invocation drops its failure "
            "(its last step, when that failed, runs again); steps get a fresh set of attempts.",
            problem=problem,
        )  # fmt: skip

    if not _confirmed(form):
        return ask()
    done, refused = _try(ask, lambda: admin.resume_invocation(console.celery_app, task_id))
    if refused is not None:
        return refused
    message = f"Resumed invocation {task_id} (it was {done.previous_status})."
    if done.dropped_step is not None:
        step = done.dropped_step
        message += f" Dropped the failure of step {step.index} {step.name!r}; it runs again."
    message += " Its call was published: a worker runs it from its journal."
    return _done(console, request, task_id, message)


def restart(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id = form.get("id", "")
    raw = form.get("from_step", "")
    step = f"step {raw}"
    if not _confirmed(form) and raw.isdigit():
        inv = admin.get_invocation(console.celery_app, task_id)
        if inv is not None and int(raw) < len(inv.steps):
            step += f" ({inv.steps[int(raw)].name!r})"

    def ask(problem: str | None = None) -> Response:
        return _ask(
            console, request, form, "restart",
            f"Restart invocation {task_id} from {step}?",
            f"A new invocation copies the journal entries before step {raw} (they replay), "
            "with the same arguments and seed, and is published under a new task id: steps "
            f"from {raw} on run again. Invocation {task_id} is left as it is.",
            problem=problem,
        )  # fmt: skip

    if not _confirmed(form):
        return ask()
    if not raw.isdigit():
        return ask(problem=f"from_step={raw!r} must be a step's index (0, 1, 2, ...).")
    app = console.celery_app
    made, refused = _try(ask, lambda: admin.restart_invocation(app, task_id, int(raw)))
    if refused is not None:
        return refused
    message = f"Restarted invocation {task_id} from step {raw} as this new invocation."
    return _done(console, request, made, message)


def forget(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id = form.get("id", "")

    def ask(problem: str | None = None) -> Response:
        return _ask(
            console, request, form, "forget", f"Forget invocation {task_id}?",
            "Its journal and outcome are deleted, so that its task id can run afresh. If it "
            "is still running or waiting, nothing will record its steps any more. This "
            "cannot be undone.",
            problem=problem, danger=True,
        )  # fmt: skip

    if not _confirmed(form):
        return ask()
    forgotten, refused = _try(ask, lambda: admin.forget_invocation(console.celery_app, task_id))
    if refused is not None:
        return refused
    if not forgotten:
        return ask(problem=f"No invocation {task_id} is kept, so there was nothing to forget.")
    return _done(console, request, None, f"Forgot invocation {task_id}.")


def cancel(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id = form.get("id", "")
    reason = form.get("reason", "").strip()
    kill = form.get("kill") == "yes"
    if kill:
        question = f"Kill invocation {task_id}?"
        explanation = (
            "It ends now, cancelled, without running anything more of its body: no "
            "compensation runs. An execution still running it stops at its next write, and "
            "its unfinished children are killed too. This cannot be undone."
        )
    else:
        question = f"Cancel invocation {task_id}?"
        explanation = (
            "Its body raises InvocationCancelled (a TerminalError) at its next durable "
            "operation, so that its compensation runs; a suspended or paused invocation is "
            "woken for it. Its unfinished children are cancelled too. It ends cancelled, or "
            "completed if its body catches the error and returns."
        )

    def ask(problem: str | None = None) -> Response:
        return _ask(
            console, request, form, "cancel", question, explanation,
            value=reason or "cancelled by an operator", value_label="Reason",
            problem=problem, danger=True, back_label="Keep it",
        )  # fmt: skip

    if not _confirmed(form):
        return ask()
    app = console.celery_app
    done, refused = _try(
        ask, lambda: admin.cancel_invocation(app, task_id, reason or None, kill=kill)
    )
    if refused is not None:
        return refused
    if done.killed:
        message = f"Killed invocation {task_id} (it was {done.previous_status})."
    elif done.already:
        message = f"Invocation {task_id} was cancelled before; it was woken again if it waited."
    else:
        message = (
            f"Cancelled invocation {task_id} (it was {done.previous_status}): its body raises "
            "InvocationCancelled at its next durable operation."
        )
    if done.children:
        message += f" {len(done.children)} unfinished child(ren) with it."
    return _done(console, request, task_id, message)


def _awakeable(form: dict[str, str]) -> str:
    name = form.get("name", "")
    return f"awakeable {name!r} (#{form.get('index', '?')})" if name else "the awakeable"


def resolve(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id, awakeable_id = form.get("id", ""), form.get("awakeable_id", "")
    text = form.get("value", "")

    def ask(problem: str | None = None, value: str | None = None) -> Response:
        return _ask(
            console, request, form, "resolve",
            f"Resolve {_awakeable(form)} of invocation {task_id} with this value?",
            "The invocation's future returns this value; the first completion wins, and the "
            "invocation is woken if it waits for it.",
            value=value, problem=problem,
        )  # fmt: skip

    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        why = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return ask(problem=f'The value is not JSON ({why}). Quote text as JSON: "yes".')
    shown = "(hidden with --hide-values)" if console.hide_values else present.pretty(value)
    if not _confirmed(form):
        return ask(value=shown)
    completed, refused = _try(
        lambda problem: ask(problem, shown),
        lambda: admin.resolve_awakeable(console.celery_app, awakeable_id, value),
    )
    if refused is not None:
        return refused
    if not completed:
        return ask(NOT_WRITTEN, shown)
    return _done(console, request, task_id, f"Resolved {_awakeable(form)}.")


NOT_WRITTEN = (
    "Nothing was written: the awakeable was completed before, or its invocation finished "
    "or is gone."
)


def reject(console: Console, request: Request, form: dict[str, str]) -> Response:
    task_id, awakeable_id = form.get("id", ""), form.get("awakeable_id", "")
    message = form.get("message", "").strip()

    def ask(problem: str | None = None) -> Response:
        return _ask(
            console, request, form, "reject",
            f"Reject {_awakeable(form)} of invocation {task_id}?",
            "The invocation's future raises a TerminalError with this message.",
            value=message, problem=problem, danger=True,
        )  # fmt: skip

    if not message:
        return ask(problem="Say why: the message is what the invocation's TerminalError says.")
    if not _confirmed(form):
        return ask()
    app = console.celery_app
    completed, refused = _try(ask, lambda: admin.reject_awakeable(app, awakeable_id, message))
    if refused is not None:
        return refused
    if not completed:
        return ask(problem=NOT_WRITTEN)
    return _done(console, request, task_id, f"Rejected {_awakeable(form)}.")


def start_bulk(console: Console, request: Request, form: dict[str, str]) -> Response:
    """Start a bulk job, once the count typed is the count it would touch now."""
    try:
        plan = pages.bulk_plan(console, form)
    except ValueError:
        return pages.bulk_preview(console, request, form, None)
    count = len(plan["ids"])
    typed = form.get("count", "").strip()
    if typed != str(count):
        problem = (
            f"Type {count}, the number of invocations this would touch now, to confirm "
            f"(you typed {typed!r})."
            if typed
            else f"Type {count} to confirm."
        )
        return pages.bulk_preview(console, request, form, problem)
    app = console.celery_app
    if plan["kind"] == "resume":
        ids: list[str] = plan["ids"]

        def work(job: Job) -> None:
            for start in range(0, len(ids), BATCH):
                for task_id in ids[start : start + BATCH]:
                    try:
                        admin.resume_invocation(app, task_id)
                        job.done += 1
                    except JournalUnavailableError:
                        raise
                    except DurableError as exc:  # it moved on since it was counted
                        job.skip(str(exc))
    else:
        seconds = display.parse_duration(plan["older_than"])
        now: float = plan["now"]

        def work(job: Job) -> None:
            while batch := admin.purge_invocations(app, "failed", seconds, now=now, limit=BATCH):
                job.done += len(batch)
                if len(batch) < BATCH:
                    return

    job = console.jobs.start(plan["description"], count, work)
    root = request.scope.get("root_path", "")
    return RedirectResponse(build_url(root, "/bulk/job", id=job.id), status_code=303)
