"""What every route of one console shares (``Console``), and the helpers its routes use
to build addresses and read forms. ``app`` assembles the routes; the route modules
(``pages``, ``api``, ``actions``) import from here, never from ``app``.
"""

from __future__ import annotations

import functools
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from celery_durable.web.bulk import Jobs
from celery_durable.web.security import CSRF_FIELD, read_body, same

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
