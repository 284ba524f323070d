"""Durable timers: ``ctx.timer`` and ``ctx.sleep``.

The wake-up time is journaled at the first execution and never recomputed on
replay. A body that waits for a timer that is not due suspends; the wake-up
component of a worker delivers the invocation again when it is.
"""

from __future__ import annotations

import json
import math
import time

from celery_durable.engine.execution import Execution, checked_name
from celery_durable.engine.futures import Timer
from celery_durable.errors import ContextError


def timer(ex: Execution, seconds: float, name: str) -> Timer:
    """Return a future that completes ``seconds`` after this operation first ran."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not (math.isfinite(seconds) and seconds >= 0)
    ):
        raise ContextError(
            f"ctx.timer({seconds!r}, {name!r}): seconds must be a finite number of at least 0."
        )
    checked_name(name, "timer")
    index = ex.position
    if index < len(ex.entries):
        value = ex.expect(index, "sleep", name)["v"]
        until = value["until"] / 1000
        ex.advance(index)
        if ex.observer is not None:
            ex.observer.step_replayed(ex, index, "sleep", name, 1, value, None)
    else:
        until_ms = int((time.time() + seconds) * 1000)
        index = ex.record("sleep", name, json.dumps({"until": until_ms}))
        until = until_ms / 1000
    return Timer(ex, index, name, until)
