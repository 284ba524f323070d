"""The minimal ACL of celery-durable's Redis user, read from docs/security.md: the tests
run under exactly the rule that page gives."""

from __future__ import annotations

import re

import redis

from tests.processes import ROOT

USER, PASSWORD = "durable", "s3cr3t-pw"

_RULE = re.compile(r"^ACL SETUSER durable on >CHANGE-ME ~durable:\* (.+)$", re.MULTILINE)
_ADDED = re.compile(r"^\s*ACL SETUSER durable (\+[^>~\n]+)$", re.MULTILINE)


def _page() -> str:
    return (ROOT / "docs" / "security.md").read_text()


def documented() -> list[str]:
    """The command rules of the documented ACL (after its key pattern)."""
    found = _RULE.search(_page())
    if found is None:
        raise AssertionError("docs/security.md gives no `ACL SETUSER durable on ...` rule")
    return found[1].split()


def added(marker: str) -> list[str]:
    """The rules docs/security.md adds for a feature: the line that holds ``marker``."""
    for line in _ADDED.findall(_page()):
        if marker in line:
            return str(line).split()
    raise AssertionError(f"docs/security.md adds no rule with {marker!r}")


#: What a server with WAITAOF (Redis 7.2+, Valkey) adds, and what a cluster adds.
WAITAOF, CLUSTER = "+waitaof", "+cluster|slots"


def rules(keys: str, *extra: str) -> list[str]:
    """The documented ACL rules of a user whose journal keys match ``keys`` (a glob),
    with the additions for the features that ``extra`` names (``WAITAOF``, ``CLUSTER``)."""
    return [f"~{keys}", *documented(), *(rule for e in extra for rule in added(e))]


def add_user(client: redis.Redis, keys: str, *extra: str) -> None:
    """Create ``USER`` with ``PASSWORD`` and exactly the documented ACL (with the
    additions ``extra`` names), through the admin's ``client``."""
    client.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}")
    client.execute_command("ACL", "SETUSER", USER, *rules(keys, *extra))


def url(port: int, db: int = 0) -> str:
    """The URL of the journal's Redis on ``port``, as ``USER``."""
    return f"redis://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}"
