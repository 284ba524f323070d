"""Static checks of the public API's types: run by mypy --strict, never imported by pytest.

Each ``assert_type`` states what a user's type checker must infer; the lines marked
``type: ignore[...]`` must be errors (mypy's ``warn_unused_ignores`` under --strict
fails the check if one of them stops being an error).
"""

from __future__ import annotations

from typing import Any, assert_type

from celery_durable import DurableContext, DurableFuture, RetryPolicy


def add(a: int, b: int) -> int:
    return a + b


def greet(name: str, *, loud: bool = False) -> str:
    return name.upper() if loud else name


def checks(ctx: DurableContext) -> None:
    assert_type(ctx.run("add", add, 1, 2), int)
    assert_type(ctx.run("greet", greet, "ada", loud=True), str)
    assert_type(ctx.run("add", add, 1, 2, retry=RetryPolicy(max_attempts=2)), int)
    assert_type(ctx.run("add", add, 1, 2, codec="json"), int)
    assert_type(ctx.run("add", add, 1, 2, at_most_once=True), int)
    ctx.run("add", add, 1, "2")  # type: ignore[call-overload]
    ctx.run("greet", greet, "ada", loud="yes")  # type: ignore[arg-type]
    ctx.run("add", add, 1, 2, retry="often")  # type: ignore[call-arg]

    future = ctx.run_async("add", add, 1, 2)
    assert_type(future, DurableFuture[int])
    assert_type(future.result(), int)
    assert_type(ctx.run_async("add", add, 1, 2, retry=RetryPolicy()), DurableFuture[int])
    ctx.run_async("add", add, "1", 2)  # type: ignore[call-overload]

    assert_type(ctx.timer(1.5), DurableFuture[None])
    assert_type(ctx.sleep(1.5), None)
    awakeable_id, approval = ctx.awakeable("approval")
    assert_type(awakeable_id, str)
    assert_type(approval, DurableFuture[Any])
    assert_type(ctx.call(object()), DurableFuture[Any])
    assert_type(ctx.any(approval, ctx.timer(5)), DurableFuture[int])
    assert_type(ctx.all(future, approval), DurableFuture[list[Any]])
    assert_type(ctx.all(future, settle=True).result(), list[Any])
