"""The app of the Sentinel tests' workers: ``celery -A tests.sentinel.proj worker``.

It is the system tests' app (``tests.system.proj``: broker and result backend on the
main Redis under the test's prefix, records there too), with the journal moved to a
Sentinel-managed primary: ``durable_redis_url = "sentinel://..."`` and
``durable_redis_options = {"master_name": ...}``, from the environment. Its task
records, outside the journal, every run of a step and every value ``ctx.run`` handed
back to the body, with the number of the execution that saw it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from celery_durable import DurableTask
from tests.sentinel import names
from tests.system import proj as system_proj

app = system_proj.app
app.conf.update(
    durable_redis_url=os.environ[names.ENV_SENTINEL_URL],
    durable_redis_options={"master_name": os.environ[names.ENV_MASTER_NAME]},
    durable_wait_replicas=int(os.environ.get(names.ENV_WAIT_REPLICAS, "0")),
    durable_wait_timeout=float(os.environ.get(names.ENV_WAIT_TIMEOUT, "1")),
)
r = system_proj.r
keys = names.Keys(system_proj.PREFIX)


def work(task_id: str, name: str, index: int, execution: int) -> dict[str, Any]:
    """A step with a side effect: count the run (and block where the test asks)."""
    # Recorded before it may block: a run whose process is killed there counts too.
    r.rpush(keys.runs(task_id), json.dumps({"step": index, "execution": execution}))
    system_proj._enter(task_id, name)
    # Different on every run: a value handed back later must be the journaled one.
    return {"index": index, "amount": 10 * (index + 1), "token": uuid.uuid4().hex}


@app.task(base=DurableTask, bind=True, name=names.STEPS, max_retries=4, default_retry_delay=0)
def steps(self: DurableTask, order: str, n_steps: int) -> dict[str, Any]:
    task_id = self.request.id
    execution = r.incr(keys.executions(task_id))
    ctx = self.ctx
    values = []
    for index in range(n_steps):
        value = ctx.run(f"step-{index}", work, task_id, f"step-{index}", index, execution)
        # ctx.run returned: the body now acts on this value, so it must never change.
        r.rpush(
            keys.reported(task_id),
            json.dumps({"step": index, "token": value["token"], "execution": execution}),
        )
        values.append(value)
    return {"order": order, "steps": values, "total": sum(v["amount"] for v in values)}
