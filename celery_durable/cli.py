"""``celery durable``: inspect and operate durable invocations from Celery's command line.

Plugged into Celery's own ``celery`` command through the ``celery.commands`` entry
point, so ``celery -A proj durable ...`` works in every project that installs
celery-durable; the app comes from ``-A`` as for Celery's own commands. Each command
calls a function of ``celery_durable.admin``.

Every command takes ``--json`` and then prints one JSON document on stdout, in a
shape that stays stable (``tests/operator/test_cli.py`` pins it):

- ``show``: the ``Invocation`` record (``Invocation.as_dict``): ``id``, ``task_name``,
  ``status``, ``steps`` (a list of ``Step`` objects: ``index``, ``name``, ``kind``,
  ``status``, ``attempts``, ``value``, ``error``, ``started_at``, ``finished_at``),
  ``result``, ``error``, ``created_at``, ``updated_at``, ``seed``, ``paused_reason``,
  ``awaiting``; times are ISO 8601 text in UTC, or null.
- ``ls``: a list of those, newest first.
- ``forget``: ``{"id", "forgotten"}``.
- ``purge``: ``{"status", "older_than" (seconds), "purged" (ids)}``.
- ``resume``: ``{"id", "previous_status", "dropped_step" (a Step or null), "published"}``.
- ``restart``: ``{"id" (the new one), "restarted_from", "from_step", "published"}``.
- ``resolve``, ``reject``: ``{"awakeable_id", "completed"}``.

Errors go to stderr with exit status 1 (2 for a wrong command line), saying what to do.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from celery_durable import admin, display
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.errors import DurableError, JournalUnavailableError
from celery_durable.journal.records import Invocation, awakeable_token
from celery_durable.runtime import runtime_for

F = TypeVar("F", bound=Callable[..., Any])


@click.group(name="durable")
@click.pass_context
def durable(ctx: click.Context, /, **_: Any) -> None:
    """Inspect and operate durable invocations (celery-durable).

    Run as `celery -A proj durable COMMAND`; every command takes --json.
    """


def _operation(fn: F) -> F:
    """Turn what the library raises into a message on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JournalUnavailableError as exc:
            raise click.ClickException(
                f"{exc} Check that Redis is running and that durable_redis_url (or the broker "
                "URL) of the app given with -A points at it."
            ) from exc
        except (DurableError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _app(ctx: click.Context) -> Any:
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("run it through Celery, with your app: celery -A proj durable ...")
    return app


def _style(ctx: click.Context, text: str, **styles: Any) -> str:
    # click.echo drops the colours when stdout is not a terminal.
    return text if getattr(ctx.obj, "no_color", False) else click.style(text, **styles)


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


# -- Reading ----------------------------------------------------------------------------


@durable.command("ls")
@click.option(
    "--status", type=click.Choice(admin.STATUSES), help="Only invocations of this status."
)
@click.option("--task", "task_name", metavar="NAME", help="Only invocations of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of invocations.")
@click.pass_context
@_operation
def ls(
    ctx: click.Context, status: str | None, task_name: str | None, limit: int, as_json: bool
) -> None:
    """List invocations, newest first: id, task, status, steps, age, what it awaits."""
    found = admin.list_invocations(_app(ctx), status=status, limit=limit, task_name=task_name)
    if as_json:
        _emit_json([inv.as_dict() for inv in found])
        return
    if not found:
        click.echo("No invocations" + (f" with status {status}" if status else "") + ".")
        return
    now = time.time()
    rows = [
        [inv.id, inv.task_name, inv.status, str(len(inv.steps)),
         display.age(inv.created_at, now), display.awaits(inv)]
        for inv in found
    ]  # fmt: skip
    headers = ["ID", "TASK", "STATUS", "STEPS", "AGE", "AWAITING"]
    _echo_lines(display.table(headers, rows, functools.partial(_style, ctx), status_column=2))


@durable.command("show")
@click.argument("invocation_id")
@click.option("--json", "as_json", is_flag=True, help="Print the invocation as one JSON object.")
@click.pass_context
@_operation
def show(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """Show an invocation's journal as a timeline, what it awaits, and its outcome."""
    app = _app(ctx)
    inv = admin.get_invocation(app, invocation_id)
    if inv is None:
        raise click.ClickException(
            f"no invocation {invocation_id} is kept (it expired after durable_retention, was "
            "forgotten, or never started). List the kept ones with `celery durable ls`."
        )
    if as_json:
        _emit_json(inv.as_dict())
        return
    now = time.time()
    label = functools.partial(_style, ctx, bold=True)
    colour = display.COLOURS.get(inv.status)
    click.echo(f"{label('invocation')}  {inv.id}")
    click.echo(f"{label('task')}        {inv.task_name}")
    click.echo(f"{label('status')}      {_style(ctx, inv.status, fg=colour, bold=True)}")
    click.echo(f"{label('created')}     {display.when(inv.created_at, now)}")
    click.echo(f"{label('updated')}     {display.when(inv.updated_at, now)}")
    click.echo(f"{label('seed')}        {inv.seed}")
    if inv.paused_reason:
        click.echo(f"{label('paused')}      {display.wrapped(inv.paused_reason)}")
    for line in _awaiting_lines(app, inv):
        click.echo(f"{label('awaiting')}    {line}")
    click.echo("")
    if inv.steps:
        rows = [
            [
                str(s.index),
                s.kind,
                s.name,
                s.status,
                str(s.attempts),
                display.took(s),
                display.preview(s),
            ]
            for s in inv.steps
        ]
        headers = ["#", "KIND", "NAME", "STATUS", "ATTEMPTS", "DURATION", "VALUE / ERROR"]
        style = functools.partial(_style, ctx)
        _echo_lines(display.table(headers, rows, style, status_column=3, right=(0, 4, 5)))
    else:
        click.echo("(no journal entries)")
    click.echo("")
    if inv.error is not None:
        click.echo(f"{label('error')}       {display.wrapped(display.error_text(inv.error))}")
    elif inv.status == "completed":
        click.echo(f"{label('result')}      {display.short(display.as_json(inv.result), 400)}")
    else:
        click.echo(f"{label('outcome')}     (none yet: {inv.status})")


# -- Changing ---------------------------------------------------------------------------


@durable.command("forget")
@click.argument("invocation_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def forget(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """Delete an invocation's journal, so that its task id can run afresh."""
    forgotten = admin.forget_invocation(_app(ctx), invocation_id)
    if as_json:
        _emit_json({"id": invocation_id, "forgotten": forgotten})
    if not forgotten:
        raise click.ClickException(
            f"no invocation {invocation_id} is kept, so there was nothing to forget. List the "
            "kept ones with `celery durable ls`."
        )
    if not as_json:
        click.echo(f"Forgot invocation {invocation_id}.")


@durable.command("purge")
@click.option("--status", type=click.Choice(admin.STATUSES), required=True)
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Created longer ago than this: 90s, 15m, 12h, 7d, 2w, 1h30m, or seconds.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def purge(ctx: click.Context, status: str, older_than: str, yes: bool, as_json: bool) -> None:
    """Delete every invocation of a status created longer ago than DURATION."""
    try:
        seconds = display.parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if not yes:
        click.confirm(
            f"Delete every {status} invocation created more than {older_than} ago, with its "
            "journal? This cannot be undone.",
            abort=True,
            err=True,
        )
    purged = admin.purge_invocations(_app(ctx), status, seconds)
    if as_json:
        _emit_json({"status": status, "older_than": seconds, "purged": purged})
    else:
        click.echo(f"Purged {len(purged)} {status} invocation(s) created more than "
                   f"{older_than} ago.")  # fmt: skip


@durable.command("resume")
@click.argument("invocation_id")
@click.option(
    "--no-publish",
    is_flag=True,
    help="Only make it resumable; send the task again (same id and arguments) yourself.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def resume(ctx: click.Context, invocation_id: str, no_publish: bool, as_json: bool) -> None:
    """Resume a paused or failed invocation, after fixing the cause.

    Its recorded call is published again under its task id: finished steps replay. A
    failed one drops its failure (its last entry, when that is a failed step, which
    then runs again).
    """
    done = admin.resume_invocation(_app(ctx), invocation_id, publish=not no_publish)
    if as_json:
        dropped = None if done.dropped_step is None else done.dropped_step.as_dict()
        _emit_json({"id": done.id, "previous_status": done.previous_status,
                    "dropped_step": dropped, "published": done.published})  # fmt: skip
        return
    click.echo(f"Resumed invocation {done.id} (it was {done.previous_status}).")
    if done.dropped_step is not None:
        step = done.dropped_step
        click.echo(f"Dropped the failure of step {step.index} {step.name!r}; it runs again.")
    if done.published:
        click.echo("Published its call: a worker runs it from its journal.")
    else:
        click.echo("Send the task again with the same task id and arguments to run it.")


@durable.command("restart")
@click.argument("invocation_id")
@click.option("--from-step", "from_step", type=click.IntRange(min=0), required=True, metavar="N",
              help="Keep entries 0..N-1 (they replay); steps N.. run again.")  # fmt: skip
@click.option("--new-id", "new_id", metavar="ID", help="Task id of the new invocation.")
@click.option("--no-publish", is_flag=True, help="Create the fork without publishing it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def restart(
    ctx: click.Context,
    invocation_id: str,
    from_step: int,
    new_id: str | None,
    no_publish: bool,
    as_json: bool,
) -> None:
    """Run an invocation again from step N as a new invocation (a fork).

    The new invocation copies the first N journal entries, the arguments and the seed,
    and is published under a new task id; the original is left as it is.
    """
    made = admin.restart_invocation(
        _app(ctx), invocation_id, from_step, new_id, publish=not no_publish
    )
    if as_json:
        _emit_json({"id": made, "restarted_from": invocation_id, "from_step": from_step,
                    "published": not no_publish})  # fmt: skip
        return
    click.echo(f"Restarted invocation {invocation_id} from step {from_step} as {made}.")
    if not no_publish:
        click.echo(f"Published it: steps {from_step}.. run again under {made}.")


@durable.command("resolve")
@click.argument("awakeable_id")
@click.argument("value", metavar="JSON")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def resolve(ctx: click.Context, awakeable_id: str, value: str, as_json: bool) -> None:
    """Complete an awakeable with a JSON value, e.g. '{"approved_by": "ada"}'."""
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not JSON ({exc}); quote text as JSON: '\"yes\"'.", param_hint="JSON"
        ) from exc
    completed = admin.resolve_awakeable(_app(ctx), awakeable_id, decoded)
    _completion(as_json, awakeable_id, completed, "Resolved")


@durable.command("reject")
@click.argument("awakeable_id")
@click.argument("message")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def reject(ctx: click.Context, awakeable_id: str, message: str, as_json: bool) -> None:
    """Fail an awakeable: the invocation's future raises a TerminalError with MESSAGE."""
    completed = admin.reject_awakeable(_app(ctx), awakeable_id, message)
    _completion(as_json, awakeable_id, completed, "Rejected")


def _completion(as_json: bool, awakeable_id: str, completed: bool, done: str) -> None:
    if as_json:
        _emit_json({"awakeable_id": awakeable_id, "completed": completed})
    if not completed:
        raise click.ClickException(
            f"nothing was written: awakeable {awakeable_id} was completed before, or its "
            "invocation finished or is gone. Check it with `celery durable show`."
        )
    if not as_json:
        click.echo(f"{done} awakeable {awakeable_id}.")


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _awaiting_lines(app: Any, inv: Invocation) -> list[str]:
    """What a suspended invocation waits for, a line each; for a waiting awakeable, the
    command that resolves it (its id holds the secret token, read from the journal)."""
    if inv.status != "suspended":
        return []
    found = runtime_for(app).store.read(inv.id)
    entries = found[1] if found is not None else []
    lines = []
    for item in inv.awaiting:
        line = display.awaited(item)
        index = item.get("index")
        if item.get("kind") == "awakeable" and type(index) is int and 0 <= index < len(entries):
            token = awakeable_token(entries[index])  # None: unreadable, shown in the steps
            if token is not None:
                line += f": celery durable resolve {AwakeableId(inv.id, index, token)} JSON"
        lines.append(line)
    return lines
