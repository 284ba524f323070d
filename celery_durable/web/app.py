"""``create_app``: the console as an ASGI app, assembled from its routes.

Pages are rendered on the server (Jinja2, every value escaped); one small script of our
own refreshes live parts. Every read and every change goes through ``celery_durable.admin``,
the functions the ``celery durable`` commands call, so the rules and messages are theirs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from celery_durable.errors import JournalUnavailableError
from celery_durable.web import actions, api, pages
from celery_durable.web.console import Console, build_url
from celery_durable.web.security import Guard


def create_app(
    celery_app: Any,
    token: str | None = None,
    read_only: bool = False,
    hide_values: bool = False,
    allowed_hosts: Iterable[str] | None = None,
) -> Callable[..., Any]:
    """Return the console as an ASGI app, to serve or to mount in another site.

    Args:
        celery_app: The Celery app whose invocations it shows.
        token: When set, nothing (pages, JSON API, ``/metrics``) answers a caller who
            has not shown it; see ``celery_durable.web.security``.
        read_only: Show no action and refuse every change.
        hide_values: Show the shape of values (types, lengths, keys), never their
            contents, nor error messages and tracebacks.
        allowed_hosts: The Host names it answers (lower case, without the port); None
            for any. ``celery durable ui`` without a token sets its loopback names.
    """
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("celery_durable.web", "templates"),
        autoescape=True,  # every template is HTML: nothing is ever written unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    console = Console(celery_app, read_only, hide_values, templates)
    routes: list[BaseRoute] = [
        *pages.routes(console),
        *api.routes(console),
        Mount("/static", StaticFiles(packages=[("celery_durable.web", "static")]), name="static"),
    ]
    if not read_only:
        routes += actions.routes(console)

    def not_found(request: Request, exc: Exception) -> Response:
        detail = getattr(exc, "detail", "Not found.")
        status = getattr(exc, "status_code", 404)
        if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
            return PlainTextResponse(f"{detail}\n", status_code=status)
        return console.render(request, "error.html", status=status, message=detail)

    def unavailable(request: Request, exc: Exception) -> Response:
        message = (
            f"{exc} Check that Redis is running and that durable_redis_url (or the broker "
            "URL) of the app points at it."
        )
        if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
            return PlainTextResponse(message + "\n", status_code=503)
        return console.render(request, "error.html", status=503, message=message)

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, JournalUnavailableError: unavailable},
    )
    login = functools.partial(_login_page, templates)
    return Guard(app, token, allowed_hosts, login)


def _login_page(templates: jinja2.Environment, root: str, target: str, wrong: bool) -> bytes:
    html = templates.get_template("login.html").render(
        url=functools.partial(build_url, root), target=target, wrong=wrong
    )
    return html.encode()
