"""What the ``celery durable`` commands share: the app from ``-A``, errors as messages,
commands that can be pasted, colours, JSON output."""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

from celery_durable.errors import DurableError, JournalUnavailableError

F = TypeVar("F", bound=Callable[..., Any])


def operation(fn: F) -> F:
    """Turn what the library raises into a message on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except JournalUnavailableError as exc:
            raise click.ClickException(
                f"{runnable(ctx, str(exc))} Check that Redis is running and that "
                "durable_redis_url (or the broker URL) of the app given with -A points at it."
            ) from exc
        except (DurableError, ValueError) as exc:
            raise click.ClickException(runnable(ctx, str(exc))) from exc
        except click.UsageError:
            raise
        except click.ClickException as exc:
            raise click.ClickException(runnable(ctx, exc.message)) from exc

    return wrapper  # type: ignore[return-value]


def app_of(ctx: click.Context) -> Any:
    """The app given with ``-A``; a usage error without one.

    Without ``-A`` Celery hands over its default app, whose settings are nobody's: it
    would look for journals under the default prefix on the default Redis, warn, and
    report what it did not find there as if it were so.
    """
    root = ctx.find_root()
    app = getattr(ctx.obj, "app", None)
    if app is None or ("app" in root.params and not root.params["app"]):
        raise click.UsageError(
            "name your app with -A, as for the worker: celery -A proj durable "
            f"{ctx.info_name} ... (or set CELERY_APP). Without it there is no journal to read."
        )
    return app


def app_option(ctx: click.Context) -> str:
    """What to pass as ``-A`` in a command to paste: as given, else the app's name."""
    given = ctx.find_root().params.get("app")
    if isinstance(given, str) and given:
        return given
    return str(getattr(getattr(ctx.obj, "app", None), "main", None) or "proj")


#: A command in a message: ``celery durable ...``, or ``celery -A <your app> durable ...``
#: as the library writes it where it does not know the app.
_COMMAND = re.compile(r"\bcelery (?:-A <your app> )?durable ")


def runnable(ctx: click.Context, text: str) -> str:
    """``text`` with every command in it runnable as it stands: with this app's ``-A``."""
    return _COMMAND.sub(f"celery -A {shlex.quote(app_option(ctx))} durable ", text)


def style(ctx: click.Context, text: str, **styles: Any) -> str:
    # click.echo drops the colours when stdout is not a terminal.
    return text if getattr(ctx.obj, "no_color", False) else click.style(text, **styles)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))
