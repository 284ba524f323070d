"""``celery durable ui``: serve the web console (``celery_durable.web``, the ui extra).

A command of its own module, added to the ``durable`` group by ``cli``: it imports the
console (Starlette, Jinja2, uvicorn) only when it runs, so the other commands need none
of them.
"""

from __future__ import annotations

import click

from celery_durable import admin
from celery_durable.errors import DurableError, JournalUnavailableError


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but a loopback one needs a token.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", envvar="CELERY_DURABLE_UI_TOKEN", metavar="TOKEN",
              help="Required of every caller (or set CELERY_DURABLE_UI_TOKEN).")  # fmt: skip
@click.option("--read-only", is_flag=True, help="Show no action and accept none.")
@click.option("--hide-values", is_flag=True,
              help="Show the shapes of values, not their contents.")  # fmt: skip
@click.pass_context
def ui(
    ctx: click.Context, host: str, port: int, token: str | None, read_only: bool,
    hide_values: bool,
) -> None:  # fmt: skip
    """Serve the web console: invocations, their timelines, and actions on them.

    Needs the ui extra: pip install 'celery-durable[ui]'.
    """
    try:
        from celery_durable.web.server import check_address, serve
    except ImportError as exc:
        raise click.ClickException(
            f"the console needs the ui extra: pip install 'celery-durable[ui]' ({exc})."
        ) from None
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("run it through Celery, with your app: celery -A proj durable ui")
    try:
        check_address(host, token)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        admin.count_invocations(app)  # a Redis that cannot be reached is said now
    except JournalUnavailableError as exc:
        raise click.ClickException(
            f"{exc} Check that Redis is running and that durable_redis_url (or the broker "
            "URL) of the app given with -A points at it."
        ) from exc
    except DurableError as exc:
        raise click.ClickException(str(exc)) from exc
    modes = [m for m, on in (("read-only", read_only), ("values hidden", hide_values)) if on]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"celery-durable console on http://{shown}:{port}/"
               + (f" ({', '.join(modes)})" if modes else ""))  # fmt: skip
    if token:
        click.echo("It asks for its token: open the address with ?token=TOKEN once, or send "
                   "'Authorization: Bearer TOKEN'.")  # fmt: skip
    serve(app, host, port, token, read_only, hide_values)
