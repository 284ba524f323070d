"""Every Redis key celery-durable uses, built in one place.

An invocation's keys share the hash tag ``{<task_id>}`` so that they land in one
Redis Cluster slot and the Lua scripts that touch them together stay legal there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InvocationKeys:
    """The keys of one invocation, in the order the Lua scripts expect them."""

    meta: str
    """Hash: task name, argument fingerprint, seed, status, outcome, timestamps."""
    journal: str
    """List: one JSON entry per completed durable operation, in order."""


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds keys under one prefix: ``<prefix>:{<task_id>}:<part>``."""

    prefix: str = "durable"

    def invocation(self, task_id: str) -> InvocationKeys:
        base = f"{self.prefix}:{{{task_id}}}:"
        return InvocationKeys(meta=base + "meta", journal=base + "journal")

    @property
    def index(self) -> str:
        """Sorted set of invocation ids scored by creation time, for listing."""
        return f"{self.prefix}:index"
