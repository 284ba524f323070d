"""The app of the console's tests: ``celery -A tests.web.proj worker``.

Configured from the environment when imported, as the worker subprocess sees it:
``DURABLE_WEB_PREFIX`` names its queue and prefixes every key it writes. The test
process builds its own with ``make_app``. Step functions count their runs in Redis, and
fail while the test has set a "broken" flag for them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import redis
from celery import Celery

from celery_durable import DurableContext, DurableTask, RetryPolicy
from tests.processes import die_with_test_process

REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENV_PREFIX = "DURABLE_WEB_PREFIX"
RETRIED = "web.retried"
CHILD = "web.child"
PAUSING = "web.pausing"
APPROVAL = "web.approval"
HOSTILE = "web.hostile"
#: A step name and values that would run script if the console did not escape them.
SCRIPT_NAME = "<script>window.__xss = 'step name'</script>"
IMG_VALUE = "<img src=x onerror=\"window.__xss = 'value'\">"
IMG_ERROR = "<img src=y onerror=\"window.__xss = 'error'\"> went wrong"
#: Fails twice, then succeeds: three attempts in the journal.
FLAKY = RetryPolicy(max_attempts=3, initial_interval=0)
PAUSE_POLICY = RetryPolicy(max_attempts=2, initial_interval=0, on_exhausted="pause")


def runs_key(prefix: str, order: str, step: str) -> str:
    return f"{prefix}:rec:runs:{order}:{step}"


def broken_key(prefix: str, step: str) -> str:
    return f"{prefix}:rec:broken:{step}"


def make_app(prefix: str, redis_url: str = REDIS_URL) -> Celery:
    """An app whose queue and keys all carry ``prefix``, with the console tests' tasks."""
    app = Celery(f"web-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=f"{prefix}:q",
        broker_transport_options={"global_keyprefix": f"{prefix}:kombu:"},
        result_backend_transport_options={"global_keyprefix": f"{prefix}:results:"},
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        result_expires=600,
        durable_redis_url=redis_url,
        durable_key_prefix=f"{prefix}:durable",
        durable_retention=600,
        durable_eager_journal="redis",
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def work(order: str, step: str) -> str:
        runs = client.incr(runs_key(prefix, order, step))
        if step == "fetch" and runs <= 2:
            raise ConnectionError(f"fetch attempt {runs} of {order} failed")
        if client.exists(broken_key(prefix, step)):
            raise RuntimeError(f"a bug in {step}")
        return f"{step}:{order}"

    @app.task(base=DurableTask, bind=True, name=CHILD, shared=False)  # type: ignore[untyped-decorator]
    def child(self: DurableTask, order: str) -> dict[str, Any]:
        """A durable child: it has a page of its own, which links back to its parent."""
        total = self.ctx.run("price", lambda: 4200)
        return {"priced": order, "total_cents": total}

    @app.task(base=DurableTask, bind=True, name=RETRIED, shared=False)  # type: ignore[untyped-decorator]
    def retried(self: DurableTask, order: str) -> dict[str, Any]:
        """A step retried twice, then a child call, then a last step."""
        ctx: DurableContext = self.ctx
        fetched = ctx.run("fetch", work, order, "fetch", retry=FLAKY)
        quote = ctx.call(child.s(order), name="price").result()
        ctx.run("store", work, order, "store")
        return {"fetched": fetched, "quote": quote}

    @app.task(base=DurableTask, bind=True, name=PAUSING, shared=False)  # type: ignore[untyped-decorator]
    def pausing(self: DurableTask, order: str) -> dict[str, Any]:
        """A charge that keeps failing pauses the invocation."""
        ctx: DurableContext = self.ctx
        reserved = ctx.run("reserve", work, order, "reserve")
        charged = ctx.run("charge", work, order, "charge", retry=PAUSE_POLICY)
        return {"order": order, "steps": [reserved, charged]}

    @app.task(base=DurableTask, bind=True, name=APPROVAL, shared=False)  # type: ignore[untyped-decorator]
    def approval(self: DurableTask, order: str) -> dict[str, Any]:
        """Waits for an awakeable that the test completes through the console."""
        ctx: DurableContext = self.ctx
        _awakeable_id, answer = ctx.awakeable("approval")
        ctx.run("ask", work, order, "ask")
        return {"order": order, "answer": answer.result()}

    @app.task(base=DurableTask, bind=True, name=HOSTILE, shared=False)  # type: ignore[untyped-decorator]
    def hostile(self: DurableTask, order: str) -> dict[str, Any]:
        """Markup in a step's name, a value and an error message."""
        ctx: DurableContext = self.ctx
        value = ctx.run(SCRIPT_NAME, lambda: {"html": IMG_VALUE})

        def fail() -> None:
            raise ValueError(IMG_ERROR)

        with contextlib.suppress(ValueError):
            ctx.run("<b>bold</b>", fail)
        return {"echo": value, "order": order}

    return app


app = make_app(os.environ.get(ENV_PREFIX, "web-unset"))
die_with_test_process()
