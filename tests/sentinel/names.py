"""What the Sentinel tests and their worker subprocesses share: names of tasks, keys, env."""

from __future__ import annotations

from dataclasses import dataclass

#: A task of ``n_steps`` steps named ``step-0``, ``step-1``, ... Its name starts with
#: ``system.``, so that ``tests.system.proj`` records the outcome of each delivery.
STEPS = "system.sentinel_steps"

ENV_SENTINEL_URL = "DURABLE_TEST_SENTINEL_URL"
ENV_MASTER_NAME = "DURABLE_TEST_SENTINEL_MASTER"
ENV_WAIT_REPLICAS = "DURABLE_TEST_WAIT_REPLICAS"
ENV_WAIT_TIMEOUT = "DURABLE_TEST_WAIT_TIMEOUT"


@dataclass(frozen=True)
class Keys:
    """Where the worker records what happened, in the main Redis under the test's prefix."""

    prefix: str

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, "rec", "sentinel", *map(str, parts)])

    def executions(self, task_id: str) -> str:
        """Counter: how many times the body started (one per execution)."""
        return self._key("executions", task_id)

    def runs(self, task_id: str) -> str:
        """List: JSON of each run of a step: its index and execution."""
        return self._key("runs", task_id)

    def reported(self, task_id: str) -> str:
        """List: JSON of each value ``ctx.run`` returned: step index, token, execution."""
        return self._key("reported", task_id)
