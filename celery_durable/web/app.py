"""``create_app``: the console as an ASGI app, its routes and what they share.

Pages are rendered on the server (Jinja2, every value escaped); one small script of our
own refreshes live parts. Every read and every change goes through ``celery_durable.admin``,
the functions the ``celery durable`` commands call, so the rules and messages are theirs.
"""

from __future__ import annotations

import functools
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from celery_durable.errors import JournalUnavailableError
from celery_durable.web.bulk import Jobs
from celery_durable.web.security import CSRF_FIELD, Guard, read_body, same

#: The largest form the console reads: an awakeable's JSON value is the big one.
MAX_FORM_BYTES = 16 * 1024 * 1024


@dataclass
class Console:
    """What every route of one console shares."""

    celery_app: Any
    read_only: bool
    hide_values: bool
    templates: jinja2.Environment
    jobs: Jobs = field(default_factory=Jobs)
    refresh_ms: int = 3000
    flashes: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """What an action did, shown once on the page it redirects to (by key: the message
    never travels in the address)."""

    def flash(self, message: str) -> str:
        key = secrets.token_urlsafe(8)
        self.flashes[key] = message
        while len(self.flashes) > 200:
            self.flashes.popitem(last=False)
        return key

    def take_flash(self, key: str | None) -> str | None:
        return self.flashes.pop(key, None) if key else None

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """The page ``name`` (a template), its context and what every page has."""
        root = request.scope.get("root_path", "")
        html = self.templates.get_template(name).render(
            url=functools.partial(build_url, root),
            read_only=self.read_only,
            hide_values=self.hide_values,
            csrf=request.scope.get("state", {}).get("csrf", ""),
            refresh_ms=self.refresh_ms,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def refuse_changes(self) -> None:
        if self.read_only:
            raise HTTPException(403, "This console is read-only (--read-only): it changes nothing.")


def build_url(root: str, path: str, /, **params: Any) -> str:
    """``path`` under the console's mount point, with the query ``params`` that are set."""
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return f"{root}{path}" + (f"?{query}" if query else "")


async def form_of(request: Request) -> dict[str, str]:
    """The POSTed form (``application/x-www-form-urlencoded``), after its CSRF check.

    Raises:
        HTTPException: 403 when the CSRF value is missing or not this browser's; 413
            when the form is too large.
    """
    from urllib.parse import parse_qsl

    try:
        body = await read_body(request.receive, MAX_FORM_BYTES)
    except ValueError as exc:
        raise HTTPException(413, f"Refused: {exc}.") from None
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    cookie = request.scope.get("state", {}).get("csrf_cookie", "")
    if not cookie or not same(form.get(CSRF_FIELD, ""), cookie):
        raise HTTPException(
            403,
            "Refused: this form is stale or came from another site (its CSRF value does not "
            "match). Reload the page and try again.",
        )
    return form


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
    from celery_durable.web import actions, api, pages

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
