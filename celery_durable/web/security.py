"""The console's guard: the token, the CSRF check, the Host check and safe headers.

One ASGI middleware in front of every route, so that nothing (a page, the JSON API,
``/metrics``) answers a caller who has not shown the token:

- The token comes as ``Authorization: Bearer <token>``, as ``?token=`` once (which sets
  a cookie and redirects to the same address without it, so it leaves no trace in the
  history), or through the login form. The cookie holds a digest of the token, not the
  token; it is ``HttpOnly`` and ``SameSite=Strict``. Every comparison is constant-time.
- Every POST carries a CSRF value equal to the one in a cookie of this origin
  (``SameSite=Strict``: another site's form cannot send it), and a POST whose ``Origin``
  is another site's is refused too.
- Without a token the console listens on a loopback address only, and answers only the
  Host names of that address, so a web page cannot reach it through DNS rebinding.
- Every response says ``no-store`` and carries a Content-Security-Policy that runs only
  the console's own script: even a value that escaped escaping could run nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The environment variable ``celery durable ui`` reads the token from.
TOKEN_ENV = "CELERY_DURABLE_UI_TOKEN"
SESSION_COOKIE = "durable_session"
CSRF_COOKIE = "durable_csrf"
CSRF_FIELD = "csrf"
#: What a page may load: its own script and style sheet, nothing inline, nothing else.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
#: Paths open to a caller without the token: the login form and the static files (the
#: same for everyone, in the package), which style the login form.
_OPEN = ("/login", "/static/")


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: a digest, never the token."""
    return hmac.new(token.encode(), b"celery-durable console session", hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two texts."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """The middleware: see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        allowed_hosts: Iterable[str] | None = None,
        login_page: Callable[[str, str, bool], bytes] | None = None,
    ) -> None:
        self.app = app
        self.token = token or None
        self.session = session_value(token) if token else ""
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self.login_page = login_page or _plain_login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        cookies = _cookies(headers.get("cookie", ""))
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        secure = scope.get("scheme") == "https"
        set_cookies: list[str] = []

        allowed = self.allowed_hosts
        if allowed is not None and _host_name(headers.get("host", "")) not in allowed:
            await _respond(send, 421, b"This console answers only its own address.\n")
            return

        if self.token is not None and not self._shown(headers, cookies):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.pop("token", None)
            if given is not None and scope["method"] == "GET" and same(given, self.token):
                target = root + path + ("?" + urlencode(query) if query else "")
                cookie = _cookie(SESSION_COOKIE, self.session, root, secure)
                await _redirect(send, target, [cookie])
                return
            if path == "/login" and scope["method"] == "POST":
                await self._login(scope, receive, send, root, secure)
                return
            if not path.startswith(_OPEN):
                await self._refuse(scope, send, path, root, given is not None)
                return

        csrf = cookies.get(CSRF_COOKIE, "")
        if len(csrf) != 64:
            csrf = secrets.token_hex(32)
            set_cookies.append(_cookie(CSRF_COOKIE, csrf, root, secure))
        scope.setdefault("state", {})["csrf"] = csrf
        if scope["method"] == "POST" and path != "/login":
            origin = headers.get("origin")
            if origin is not None and origin != "null" and not _same_origin(origin, headers):
                await _respond(send, 403, b"Refused: this form was sent from another site.\n")
                return
            # The form's value is checked where the form is read (``form_of``), against
            # the cookie's, which another site's request never carries.
            scope["state"]["csrf_cookie"] = cookies.get(CSRF_COOKIE, "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(_HEADERS)
                extra.append((b"cache-control", b"no-store"))
                took = (time.perf_counter() - started) * 1000
                extra.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                extra += [(b"set-cookie", c.encode()) for c in set_cookies]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _shown(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and same(auth[7:].strip(), self.token):
            return True
        return same(cookies.get(SESSION_COOKIE, ""), self.session)

    async def _login(
        self, scope: Scope, receive: Receive, send: Send, root: str, secure: bool
    ) -> None:
        assert self.token is not None
        form = dict(parse_qsl((await read_body(receive, 64 * 1024)).decode("utf-8", "replace")))
        target = form.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if same(form.get("token", ""), self.token):
            cookie = _cookie(SESSION_COOKIE, self.session, root, secure)
            await _redirect(send, root + target, [cookie])
            return
        body = self.login_page(root, target, True)
        await _respond(send, 401, body, b"text/html; charset=utf-8")

    async def _refuse(self, scope: Scope, send: Send, path: str, root: str, wrong: bool) -> None:
        accept = _headers(scope).get("accept", "")
        if path.startswith(("/api/", "/metrics")) or "text/html" not in accept:
            await _respond(
                send,
                401,
                b"This console needs its token: send 'Authorization: Bearer <token>'.\n",
                extra=[(b"www-authenticate", b'Bearer realm="celery-durable"')],
            )
            return
        query = scope.get("query_string", b"").decode("latin-1")
        kept = urlencode([(k, v) for k, v in parse_qsl(query) if k != "token"])
        target = path + ("?" + kept if kept else "")
        await _respond(send, 401, self.login_page(root, target, wrong), b"text/html; charset=utf-8")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, refused past ``limit`` bytes.

    Raises:
        ValueError: the body is longer than ``limit``.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the form is larger than {limit:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _host_name(host: str) -> str:
    """A Host header's name, without its port: ``[::1]:8765`` is ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0]


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no session
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _cookie(name: str, value: str, root: str, secure: bool) -> str:
    flags = f"{name}={value}; Path={root or '/'}; HttpOnly; SameSite=Strict"
    return flags + ("; Secure" if secure else "")


def _same_origin(origin: str, headers: dict[str, str]) -> bool:
    _, _, rest = origin.partition("://")
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    return rest.lower() == host.lower()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [*_HEADERS, (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, target: str, cookies: list[str]) -> None:
    headers = [(b"location", target.encode("latin-1", "replace")), (b"content-length", b"0")]
    headers += [*_HEADERS, (b"cache-control", b"no-store")]
    headers += [(b"set-cookie", c.encode()) for c in cookies]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _plain_login(root: str, target: str, wrong: bool) -> bytes:
    return b"This console needs its token.\n"
