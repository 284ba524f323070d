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
  ``awaiting`` (``kind``, ``name``, ``index``, a timer's ``until``, an awakeable's
  ``awakeable_id``), ``cancel_reason``, ``deadline``, ``concurrency_key``,
  ``concurrency_limit``, ``steps_until`` (when a finished invocation's steps are, or
  were, dropped: ``durable_journal_retention``; null when they go with the outcome),
  ``steps_dropped`` (true once they were: ``steps`` is empty then); times are ISO 8601
  text in UTC, or null. An invocation with a
  concurrency key also has ``concurrency``: ``{"key", "holders", "waiting"}``, who holds
  its key's slots and who waits for one, in order.
- ``ls``: a list of those, newest first.
- ``forget``: ``{"id", "forgotten"}``.
- ``purge``: ``{"status", "older_than" (seconds), "purged" (ids)}``.
- ``resume``: ``{"id", "previous_status", "dropped_step" (a Step or null), "published"}``.
- ``restart``: ``{"id" (the new one), "restarted_from", "from_step", "published"}``.
- ``resolve``, ``reject``: ``{"awakeable_id", "completed"}``.
- ``cancel``: ``{"id", "previous_status", "killed", "already", "children"}`` (``cli_flow``).

Errors go to stderr with exit status 1 (2 for a wrong command line), saying what to do.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import click

from celery_durable import admin, display
from celery_durable.cli_common import app_of as _app
from celery_durable.cli_common import emit_json as _emit_json
from celery_durable.cli_common import operation as _operation
from celery_durable.cli_common import runnable as _runnable
from celery_durable.cli_common import style as _style
from celery_durable.cli_flow import cancel
from celery_durable.cli_ui import ui
from celery_durable.engine.awakeables import AwakeableId
from celery_durable.journal.records import Invocation
from celery_durable.keys import FINISHED_STATUSES


@click.group(name="durable")
@click.pass_context
def durable(ctx: click.Context, /, **_: Any) -> None:
    """Inspect and operate durable invocations (celery-durable).

    Run as `celery -A proj durable COMMAND`; every command takes --json.
    """


# -- Reading ----------------------------------------------------------------------------


@durable.command("ls")
@click.option(
    "--status", type=click.Choice(admin.STATUSES), help="Only invocations of this status."
)
@click.option("--task", "task_name", metavar="NAME", help="Only invocations of this task.")
@click.option(
    "--limit", type=click.IntRange(min=1, max=admin.MAX_LIMIT), default=50, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of invocations.")
@click.pass_context
@_operation
def ls(
    ctx: click.Context, status: str | None, task_name: str | None, limit: int, as_json: bool
) -> None:
    """List invocations, newest first: id, task, status, steps, age, what it awaits.

    The table reads summaries, not journals; --json prints whole records, journals too.
    """
    app = _app(ctx)
    if as_json:
        found = admin.list_invocations(app, status=status, limit=limit, task_name=task_name)
        _emit_json([inv.as_dict() for inv in found])
        return
    page = admin.list_summaries(app, status=status, task_name=task_name, limit=limit)
    if not page.invocations:
        click.echo("No invocations" + (f" with status {status}" if status else "") + ".")
        return
    now = time.time()
    rows = [
        [inv.id, inv.task_name, inv.status, str(inv.step_count),
         display.age(inv.created_at, now), display.awaits(inv)]
        for inv in page.invocations
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
    slots = admin.concurrency_slots(app, inv.concurrency_key) if inv.concurrency_key else None
    if as_json:
        document = inv.as_dict()
        if slots is not None:
            document["concurrency"] = slots.as_dict()
        _emit_json(document)
        return
    now = time.time()
    label = functools.partial(_style, ctx, bold=True)
    colour = display.COLOURS.get(inv.status)
    shown = display.printable
    click.echo(f"{label('invocation')}  {shown(inv.id)}")
    click.echo(f"{label('task')}        {shown(inv.task_name)}")
    click.echo(f"{label('status')}      {_style(ctx, shown(inv.status), fg=colour, bold=True)}")
    click.echo(f"{label('created')}     {display.when(inv.created_at, now)}")
    click.echo(f"{label('updated')}     {display.when(inv.updated_at, now)}")
    click.echo(f"{label('seed')}        {'-' if inv.seed is None else inv.seed}")
    if inv.paused_reason:
        reason = _runnable(ctx, inv.paused_reason)
        click.echo(f"{label('paused')}      {display.wrapped(reason)}")
    for line in _awaiting_lines(inv):
        click.echo(f"{label('awaiting')}    {_runnable(ctx, shown(line))}")
    for name, line in display.flow_lines(inv, slots, now):
        click.echo(f"{label(name.ljust(11))} {shown(line)}")
    kept = display.steps_line(inv, now)
    if kept is not None:
        click.echo(f"{label('steps')}       {kept}")
    click.echo("")
    if inv.steps_dropped:
        click.echo("(steps: dropped after journal retention)")
    elif inv.steps:
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
        result = display.short(display.as_json(inv.result), 400)
        click.echo(f"{label('result')}      {shown(result)}")
    else:
        click.echo(f"{label('outcome')}     (none yet: {shown(inv.status)})")


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
    else:
        click.echo(f"Send the task again under task id {made}, same arguments, to run it.")


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
    except RecursionError:
        raise click.BadParameter(
            f"the value nests lists and dicts more than {admin.MAX_NESTING} deep; send a "
            "flatter value.",
            param_hint="JSON",
        ) from None
    completed = admin.resolve_awakeable(_app(ctx), awakeable_id, decoded)
    _completion(ctx, as_json, awakeable_id, completed, "Resolved")


@durable.command("reject")
@click.argument("awakeable_id")
@click.argument("message")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operation
def reject(ctx: click.Context, awakeable_id: str, message: str, as_json: bool) -> None:
    """Fail an awakeable: the invocation's future raises a TerminalError with MESSAGE."""
    completed = admin.reject_awakeable(_app(ctx), awakeable_id, message)
    _completion(ctx, as_json, awakeable_id, completed, "Rejected")


def _completion(
    ctx: click.Context, as_json: bool, awakeable_id: str, completed: bool, done: str
) -> None:
    if as_json:
        _emit_json({"awakeable_id": awakeable_id, "completed": completed})
    if completed:
        if not as_json:
            click.echo(f"{done} awakeable {awakeable_id}.")
        return
    parsed = AwakeableId.parse(awakeable_id)
    task_id = parsed.task_id if parsed is not None else ""
    inv = admin.get_invocation(_app(ctx), task_id)
    if inv is None:
        why = (
            f"its invocation {task_id} is not kept in this app's journals (it expired, was "
            "forgotten, or the app given with -A keeps its journals elsewhere)"
        )
    elif inv.status in FINISHED_STATUSES:
        why = f"its invocation {task_id} is {inv.status}"
    else:
        why = "it was completed before, or its id does not match what the journal holds"
    raise click.ClickException(
        f"nothing was written: awakeable {awakeable_id} was not completed: {why}. Check it "
        f"with `celery durable show {task_id}`."
    )


durable.add_command(ui)
durable.add_command(cancel)


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _awaiting_lines(inv: Invocation) -> list[str]:
    """What a suspended invocation waits for, a line each; for a waiting awakeable, the
    command that resolves it (its id holds the secret token, read from the journal)."""
    if inv.status != "suspended":
        return []
    lines = []
    for item in inv.awaiting:
        line = display.awaited(item)
        if item.get("awakeable_id"):
            line += f": celery durable resolve {item['awakeable_id']} JSON"
        lines.append(line)
    return lines
