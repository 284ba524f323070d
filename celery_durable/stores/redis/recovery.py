"""The Redis store's part for recovery: claiming running invocations whose message is lost.

Workers take turns: whoever sets the recovery lock sweeps (for lost invocations, and
for deadlines), and nobody else does until it expires. A claim (recover.lua) checks and
marks one invocation in one script, so two sweeps that overlap never both publish it,
and the next claim of the same invocation comes later and later while nothing runs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery_durable.stores.redis import scripts
from celery_durable.stores.redis.base import RedisBase, ms


class Recovery(RedisBase):
    """The recovery sweep's turn and claims (``JournalStore``)."""

    def take_recovery_turn(self, seconds: float, holder: str = "") -> bool:
        lock = self._keys.recovery_lock
        with self._errors("*", "take the recovery turn for"):
            if self._command("SET", lock, holder or f"{time.time():.6f}", "NX", "PX", ms(seconds)):
                return True
            # Its own turn goes on until the lock expires; then anyone may take the next.
            return bool(holder) and self._command("GET", lock) == holder

    def recover(self, task_ids: Sequence[str], after: float) -> list[str | None]:
        if not task_ids:
            return []
        after_ms = ms(after)

        def call() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for task_id in task_ids:
                k = self._keys.invocation(task_id)
                pipe.execute_command("EVALSHA", scripts.RECOVER.sha, 2, k.meta, k.call, after_ms)
            replies: list[Any] = pipe.execute()
            return replies

        with self._errors(task_ids[0], "recover"):
            return self._loading_scripts(call)
