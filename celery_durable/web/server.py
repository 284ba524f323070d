"""Serving the console from ``celery -A proj durable ui`` (uvicorn)."""

from __future__ import annotations

import ipaddress
from typing import Any

import uvicorn

from celery_durable.web.app import create_app

#: The Host names a console without a token answers on a loopback address.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, token: str | None) -> None:
    """Refuse to serve anywhere but this machine without a token.

    Raises:
        ValueError: ``host`` is not a loopback address and there is no token; the
            message says what to do.
    """
    if not token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve the console on {host} without a token: anyone who can reach "
            "that address could read every journal and resume, restart or forget "
            "invocations. Pass --token (or set CELERY_DURABLE_UI_TOKEN), or serve on "
            "127.0.0.1 and reach it through an SSH tunnel or a proxy that authenticates."
        )


def serve(
    celery_app: Any,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    read_only: bool = False,
    hide_values: bool = False,
) -> None:
    """Serve the console until interrupted.

    Raises:
        ValueError: see ``check_address``.
    """
    check_address(host, token)
    # Without a token only this machine's names are answered: a web page that points its
    # own domain at 127.0.0.1 (DNS rebinding) gets nothing.
    allowed = None if token else LOOPBACK_NAMES | {host.lower()}
    app = create_app(celery_app, token, read_only, hide_values, allowed_hosts=allowed)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
