"""The Celery app of the hardening tests' workers: ``celery -A tests.hardening.proj``."""

from __future__ import annotations

import os
from typing import Any

from celery_durable import DurableTask
from tests.hardening import harness
from tests.processes import die_with_test_process

PREFIX = os.environ.get(harness.ENV_PREFIX, "hd-unset")
app = harness.make_app(
    harness.REDIS_URL,
    PREFIX,
    os.environ.get(harness.ENV_QUEUE, f"{PREFIX}-q"),
    os.environ.get(harness.ENV_JOURNAL_URL, ""),
    os.environ.get(harness.ENV_WAIT_AOF) == "1",
)


@app.task(base=DurableTask, bind=True, name=harness.BOTH)
def both(self: DurableTask, n: int) -> list[int]:
    ctx = self.ctx
    values: list[int] = ctx.all(
        ctx.run_async("a", int, n), ctx.run_async("b", lambda: n + 1)
    ).result()
    return values


@app.task(base=DurableTask, bind=True, name=harness.ECHO)
def echo(self: DurableTask, value: Any) -> Any:
    return self.ctx.run("echo", lambda: value)


def _refuse(order: str) -> None:
    raise ValueError(f"order {order} refused")


@app.task(base=DurableTask, bind=True, name=harness.FAILING)
def failing(self: DurableTask, order: str) -> str:
    try:
        self.ctx.run("refuse", _refuse, order)
    except ValueError as exc:
        return f"caught {type(exc).__name__}: {exc}"
    return "not refused"


@app.task(name=harness.NEVER)
def never() -> str:
    return "the real child's value"


@app.task(base=DurableTask, bind=True, name=harness.PARENT)
def parent(self: DurableTask) -> Any:
    return self.ctx.call(never.s(), name="child").result()


@app.task(base=DurableTask, bind=True, name=harness.TOUR)
def tour(self: DurableTask, order: str, seconds: float = 0.5) -> dict[str, Any]:
    ctx = self.ctx
    reserved = ctx.run("reserve", lambda: {"order": order, "sku": "A1"})
    token = str(ctx.rand.uuid4())
    quote = ctx.run_async("quote", lambda: 42)
    ctx.sleep(seconds, "cool-off")
    amount = quote.result()
    charged = ctx.run("charge", lambda: {"charged": amount, "key": token})
    return {"reserved": reserved, "charged": charged}


die_with_test_process()
