"""The app of the operator tests: ``celery -A tests.operator.proj worker|durable ...``.

Configured from the environment when imported, as worker and CLI subprocesses see it:
``DURABLE_OPERATOR_PREFIX`` names its queue and prefixes every key it writes (kombu's,
the result backend's, the journals and the records), so that a test deletes them all.
The test process builds apps of its own with ``make_app``.

The tasks' step functions count their runs in Redis, and fail while the test has set a
"broken" flag for them: a bug the test fixes, as an operator would, before resuming.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from celery_durable import DurableContext, DurableTask, RetryPolicy

REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENV_PREFIX = "DURABLE_OPERATOR_PREFIX"
PIPELINE = "operator.pipeline"
PAUSING = "operator.pausing"
APPROVAL = "operator.approval"
#: The pausing task's charge step: two attempts, then the invocation pauses.
PAUSE_POLICY = RetryPolicy(max_attempts=2, initial_interval=0, on_exhausted="pause")
STEPS = ("reserve", "charge", "ship")


def runs_key(prefix: str, order: str, step: str) -> str:
    """Counter: how many times ``step`` ran for ``order``."""
    return f"{prefix}:rec:runs:{order}:{step}"


def broken_key(prefix: str, step: str) -> str:
    """Flag: while set, ``step`` raises, as code with a bug would."""
    return f"{prefix}:rec:broken:{step}"


def make_app(prefix: str, redis_url: str = REDIS_URL) -> Celery:
    """An app whose queue and keys all carry ``prefix``, with the operator tests' tasks."""
    app = Celery(f"operator-{prefix}", broker=redis_url, backend=redis_url, set_as_current=False)
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
        client.incr(runs_key(prefix, order, step))
        if client.exists(broken_key(prefix, step)):
            raise RuntimeError(f"a bug in {step}")
        return f"{step}:{order}"

    def steps(ctx: DurableContext, order: str, retry: RetryPolicy | None) -> dict[str, Any]:
        done = [ctx.run("reserve", work, order, "reserve")]
        key = str(ctx.rand.uuid4())  # the same in a restarted fork: the seed is copied
        done.append(ctx.run("charge", work, order, "charge", retry=retry))
        done.append(ctx.run("ship", work, order, "ship"))
        return {"order": order, "key": key, "steps": done}

    @app.task(base=DurableTask, bind=True, name=PIPELINE, shared=False)  # type: ignore[untyped-decorator]
    def pipeline(self: DurableTask, order: str) -> dict[str, Any]:
        """Three steps under Celery's default options: a step's error fails it at once."""
        return steps(self.ctx, order, None)

    @app.task(base=DurableTask, bind=True, name=PAUSING, shared=False)  # type: ignore[untyped-decorator]
    def pausing(self: DurableTask, order: str) -> dict[str, Any]:
        """The same steps; a charge that keeps failing pauses the invocation."""
        return steps(self.ctx, order, PAUSE_POLICY)

    @app.task(base=DurableTask, bind=True, name=APPROVAL, shared=False)  # type: ignore[untyped-decorator]
    def approval(self: DurableTask, order: str) -> dict[str, Any]:
        """Waits for an awakeable that the test completes with `celery durable resolve`."""
        ctx = self.ctx
        _awakeable_id, answer = ctx.awakeable("approval")
        ctx.run("ask", work, order, "ask")
        return {"order": order, "answer": answer.result()}

    return app


app = make_app(os.environ.get(ENV_PREFIX, "operator-unset"))
