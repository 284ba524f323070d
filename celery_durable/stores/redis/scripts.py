"""The Lua scripts of the Redis store, one operation each, called by SHA1.

The source is sent only when Redis answers ``NOSCRIPT`` (after a restart or a
``SCRIPT FLUSH``).
"""

from __future__ import annotations

import hashlib
from importlib import resources


class Script:
    """A Lua script from ``lua/``."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        lua = resources.files("celery_durable.stores.redis").joinpath(f"lua/{name}.lua")
        self.source = lua.read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


START = Script("start")
APPEND = Script("append")
ATTEMPT = Script("attempt")
GUARD = Script("guard")
RELEASE = Script("release")
RENEW = Script("renew")
BREAK_LEASE = Script("break_lease")
FINISH = Script("finish")
PAUSE = Script("pause")
FORGET = Script("forget")
SUSPEND = Script("suspend")
COMPLETE = Script("complete")
SENT = Script("sent")
CLAIM = Script("claim")
ACK_WAKEUP = Script("ack_wakeup")
RESUME = Script("resume")
FORK = Script("fork")
FORGET_IF = Script("forget_if")

ALL = (
    START, APPEND, ATTEMPT, GUARD, RELEASE, RENEW, BREAK_LEASE, FINISH, PAUSE, FORGET, SUSPEND,
    COMPLETE, SENT, CLAIM, ACK_WAKEUP, RESUME, FORK, FORGET_IF,
)  # fmt: skip
