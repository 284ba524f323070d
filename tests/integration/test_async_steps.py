"""``run_async`` steps on the Redis journal: in eager mode, and under an in-thread worker."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from celery import Celery

from celery_durable import DurableTask, get_invocation

TIMEOUT = 30
RUNS = 50


def test_all_of_two_async_steps_that_return_at_once_never_hangs_eagerly(app: Celery) -> None:
    # durable_eager_journal="redis" (the app fixture): each commit is a round trip, long
    # enough for the first step to commit while the body still submits it.
    app.conf.task_always_eager = True

    @app.task(base=DurableTask, bind=True, shared=False)
    def both(self: DurableTask, n: int) -> list[int]:
        ctx = self.ctx
        values: list[int] = ctx.all(
            ctx.run_async("a", int, n), ctx.run_async("b", lambda: n + 1)
        ).result()
        return values

    box: dict[str, Any] = {}

    def many() -> None:
        box["values"] = [both.apply((n,), task_id=f"both-{n}").get() for n in range(RUNS)]

    thread = threading.Thread(target=many, daemon=True)
    thread.start()
    thread.join(TIMEOUT * 2)
    assert not thread.is_alive(), "an eager ctx.all(run_async, run_async) hung"
    assert box["values"] == [[n, n + 1] for n in range(RUNS)]
    inv = get_invocation(app, f"both-{RUNS - 1}")
    assert inv is not None and [s.name for s in inv.steps] == ["a", "b", "all"]


def test_a_retry_from_the_body_waits_for_its_async_steps(app: Celery, worker: Any) -> None:
    runs: Counter[str] = Counter()
    started = threading.Event()

    def slow() -> str:
        runs["slow"] += 1
        started.set()
        threading.Event().wait(0.5)
        return "slow"

    @app.task(base=DurableTask, bind=True, shared=False)
    def retried(self: DurableTask) -> str:
        future = self.ctx.run_async("slow", slow)
        if self.request.retries == 0:
            assert started.wait(5)
            raise self.retry(countdown=0)  # releases the lease: the next one may start
        value: str = future.result()
        return value

    with worker():
        result = retried.delay()
        assert result.get(timeout=TIMEOUT) == "slow"
    # Journaled before the lease was released, so the retry found it the last entry of
    # its own and re-opened it (Celery's retry idiom): it ran again, as its second
    # attempt. A release that did not wait would have found nothing to re-open.
    assert runs == {"slow": 2}
    inv = get_invocation(app, result.id)
    assert inv is not None and [(s.name, s.attempts) for s in inv.steps] == [("slow", 2)]
