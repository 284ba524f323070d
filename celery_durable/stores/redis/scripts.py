"""The Lua scripts of the Redis store, one operation each, called by SHA1.

The source is sent only when Redis answers ``NOSCRIPT`` (after a restart or a
``SCRIPT FLUSH``).
"""

from __future__ import annotations

import hashlib
from importlib import resources


def _lua(name: str) -> str:
    return resources.files("celery_durable.stores.redis").joinpath(f"lua/{name}.lua").read_text()


class Script:
    """A Lua script from ``lua/``; with ``fenced``, after ``lua/_fenced.lua``, whose
    ``fenced()`` makes the one reply every fence check gives."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, fenced: bool = False) -> None:
        self.name = name
        self.source = (_lua("_fenced") if fenced else "") + _lua(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


START = Script("start")
APPEND = Script("append", fenced=True)
ATTEMPT = Script("attempt", fenced=True)
GUARD = Script("guard", fenced=True)
RELEASE = Script("release")
RENEW = Script("renew")
BREAK_LEASE = Script("break_lease")
FINISH = Script("finish", fenced=True)
PAUSE = Script("pause", fenced=True)
PAUSE_FINISHED = Script("pause_finished")
FORGET = Script("forget")
SUSPEND = Script("suspend", fenced=True)
COMPLETE = Script("complete")
SENT = Script("sent", fenced=True)
CLAIM = Script("claim")
ACK_WAKEUP = Script("ack_wakeup")
RESUME = Script("resume")
FORK = Script("fork")
FORGET_IF = Script("forget_if")
RECOVER = Script("recover")
# Flow control: cancel, deadlines, concurrency keys.
CANCEL = Script("cancel")
DEADLINES = Script("deadlines")
ACQUIRE_SLOT = Script("acquire_slot")
RELEASE_SLOTS = Script("release_slots")
CHECK_HOLDER = Script("check_holder")
GRANT_SLOT = Script("grant_slot")

ALL = (
    START, APPEND, ATTEMPT, GUARD, RELEASE, RENEW, BREAK_LEASE, FINISH, PAUSE, PAUSE_FINISHED,
    FORGET, SUSPEND, COMPLETE, SENT, CLAIM, ACK_WAKEUP, RESUME, FORK, FORGET_IF, RECOVER,
    CANCEL, DEADLINES, ACQUIRE_SLOT, RELEASE_SLOTS, CHECK_HOLDER, GRANT_SLOT,
)  # fmt: skip
