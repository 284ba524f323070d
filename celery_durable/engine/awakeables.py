"""Awakeables: futures that something outside the task completes.

``ctx.awakeable()`` journals a secret token of 128 random bits at its first
execution, so every replay hands out the same id. The id names the invocation, the
journal position and the token; ``resolve_awakeable`` and ``reject_awakeable``
(``celery_durable.admin``) complete it, and the first completion wins. Knowing a
task id is not enough to complete its awakeables: the token is only in the id and
the journal.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass

from celery_durable.engine.execution import Execution, checked_name
from celery_durable.engine.futures import FromOutside

_PREFIX = "awk1"
#: A journal position: ASCII digits, and far fewer than a journal could ever hold.
_INDEX = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class AwakeableId:
    """What an awakeable id says: whose, where in its journal, and the secret."""

    task_id: str
    index: int
    token: str

    def __str__(self) -> str:
        encoded = base64.urlsafe_b64encode(self.task_id.encode()).decode().rstrip("=")
        return f"{_PREFIX}.{encoded}.{self.index}.{self.token}"

    @classmethod
    def parse(cls, text: str) -> AwakeableId | None:
        """Read an id; None when ``text`` is not one."""
        parts = text.split(".") if isinstance(text, str) else []
        if len(parts) != 4 or parts[0] != _PREFIX or not _INDEX.fullmatch(parts[2]):
            return None
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            task_id = base64.urlsafe_b64decode(padded.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return cls(task_id, int(parts[2]), parts[3])


def awakeable(ex: Execution, name: str) -> tuple[str, FromOutside[object]]:
    """Return an awakeable's id and the future its completion completes."""
    checked_name(name, "awakeable")
    index = ex.position
    if index < len(ex.entries):
        value = ex.expect(index, "awakeable", name)["v"]
        token = value["id"]
        ex.advance(index)
        if ex.observer is not None:
            ex.observer.step_replayed(ex, index, "awakeable", name, 1, value, None)
    else:
        token = secrets.token_hex(16)
        index = ex.record("awakeable", name, json.dumps({"id": token}))
    return str(AwakeableId(ex.id, index, token)), FromOutside(ex, index, "awakeable", name)
