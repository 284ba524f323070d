"""``celery durable cancel``: cancel an invocation and its children, gracefully or not.

``--json`` prints ``{"id", "previous_status", "killed", "already", "children"}``
(``CancelledInvocation.as_dict``).
"""

from __future__ import annotations

import click

from celery_durable import admin
from celery_durable.cli_common import app_of, emit_json, operation


@click.command("cancel")
@click.argument("invocation_id")
@click.option("--reason", metavar="TEXT", help="Why: the InvocationCancelled's message says it.")
@click.option("--kill", is_flag=True,
              help="End it now, without running its body (nor its compensation).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@operation
def cancel(
    ctx: click.Context, invocation_id: str, reason: str | None, kill: bool, as_json: bool
) -> None:
    """Cancel an invocation, and its unfinished children.

    Its body raises InvocationCancelled (a TerminalError) at its next durable operation,
    so that its compensation runs; a suspended or paused one is woken for it. With
    --kill it ends now instead, without running anything more.
    """
    done = admin.cancel_invocation(app_of(ctx), invocation_id, reason, kill)
    if as_json:
        emit_json(done.as_dict())
        return
    if done.killed:
        click.echo(f"Killed invocation {done.id} (it was {done.previous_status}): cancelled.")
    elif done.already:
        click.echo(f"Invocation {done.id} was cancelled before (it is {done.previous_status}); "
                   "the first reason stays, and it was woken again if it waited.")  # fmt: skip
    else:
        click.echo(f"Cancelled invocation {done.id} (it was {done.previous_status}): its body "
                   "raises InvocationCancelled at its next durable operation.")  # fmt: skip
    if done.children:
        what = "Killed" if done.killed else "Cancelled"
        click.echo(f"{what} {len(done.children)} unfinished child(ren) with it: "
                   + ", ".join(done.children))  # fmt: skip
