"""The test process's side: the worker subprocess, the client app, and how a run of a case
is turned into an outcome that two variants can be compared on."""

from __future__ import annotations

import gc
import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.canvas import Signature
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult, ResultBase

from celery_durable.runtime import release_runtime
from tests.compat import harness
from tests.processes import Worker, start_worker

REDIS_URL = os.environ.get(harness.ENV_REDIS_URL, "redis://127.0.0.1:6379/0")

#: How long the records of a run must stay unchanged before they count as complete.
QUIET = 0.4
#: How long to wait for records after the result is in.
SETTLE_TIMEOUT = 5.0


@dataclass
class World:
    """The compat suite's prefix, client app, Redis client and its one worker."""

    prefix: str
    log_dir: Path
    client: redis.Redis
    app: Celery = field(init=False)
    keys: harness.Keys = field(init=False)
    worker: Worker | None = None

    def __post_init__(self) -> None:
        self.queue = f"{self.prefix}-q"
        self.app = harness.make_app(REDIS_URL, self.prefix, self.queue)
        self.keys = harness.Keys(self.prefix)

    def start_worker(self) -> Worker:
        name = f"{self.queue}-worker"
        environ = {
            harness.ENV_REDIS_URL: REDIS_URL,
            harness.ENV_PREFIX: self.prefix,
            harness.ENV_QUEUE: self.queue,
        }
        log_path = self.log_dir / f"{name}.log"
        self.worker = start_worker(
            "tests.compat.proj", name, [self.queue], log_path, environ, "prefork", concurrency=2
        )
        return self.worker

    def worker_log(self) -> str:
        return self.worker.log() if self.worker else ""

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        release_runtime(self.app)
        self.app.close()
        # Celery's Redis result backend leaves its sockets to the garbage collector.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    def run(self, variant: str) -> Run:
        return Run(self, variant, f"{variant}-{uuid.uuid4().hex[:10]}")

    def records(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.client.lrange(key, 0, -1)]

    def counter(self, key: str) -> int:
        return int(self.client.get(key) or 0)


@dataclass
class Run:
    """One variant of one case: signatures of that variant, all carrying the run's tag."""

    world: World
    variant: str
    tag: str

    def s(self, name: str, *args: Any, **kwargs: Any) -> Signature:
        """A partial signature of the task under test ``<variant>.<name>``."""
        return self.world.app.signature(
            f"{self.variant}.{name}", args=args, kwargs={**kwargs, "tag": self.tag}
        )

    def si(self, name: str, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature of the task under test ``<variant>.<name>``."""
        return self.world.app.signature(
            f"{self.variant}.{name}",
            args=args,
            kwargs={**kwargs, "tag": self.tag},
            immutable=True,
        )

    def on_success(self, label: str) -> Signature:
        return self.world.app.signature(
            "compat.on_success", kwargs={"tag": self.tag, "label": label}
        )

    def errback_new(self, label: str) -> Signature:
        return self.world.app.signature(
            "compat.errback_new", kwargs={"tag": self.tag, "label": label}
        )

    def errback_old(self, label: str) -> Signature:
        return self.world.app.signature(
            "compat.errback_old", kwargs={"tag": self.tag, "label": label}
        )

    def callbacks(self) -> list[dict[str, Any]]:
        return self.world.records(self.world.keys.callbacks(self.tag))

    def signals(self) -> list[dict[str, Any]]:
        return self.world.records(self.world.keys.signals(self.tag))

    def postruns(self) -> list[dict[str, Any]]:
        return self.world.records(self.world.keys.postruns(self.tag))

    def runs(self, step: str) -> int:
        return self.world.counter(self.world.keys.runs(self.tag, step))


# -- Outcomes --------------------------------------------------------------------------


def value(v: Any) -> list[Any]:
    """The outcome of a ``get()`` that returned ``v``."""
    return ["value", harness.typed(v)]


def error(exc_type: type[BaseException] | str, message: str) -> list[Any]:
    """The outcome of a ``get()`` that raised ``exc_type(message)``."""
    name = exc_type if isinstance(exc_type, str) else harness.qualified(exc_type)
    return ["error", name, message]


def walk(result: ResultBase, label: str = "result") -> Iterator[tuple[str, AsyncResult]]:
    """Every result of a canvas's result graph, with a label that does not depend on ids."""
    if isinstance(result, GroupResult):
        for index, child in enumerate(result.results or []):
            yield from walk(child, f"{label}[{index}]")
    elif isinstance(result, AsyncResult):
        yield label, result
    parent = getattr(result, "parent", None)
    if parent is not None:
        yield from walk(parent, f"{label}.parent")


def labels(result: ResultBase) -> dict[str, str]:
    """Task id -> label, for every result in ``result``'s graph."""
    return {r.id: label for label, r in walk(result)}


def relabel(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A record whose task id is replaced by its label in the result graph."""
    if "task_id" not in record:
        return record
    task_id = record["task_id"]
    return {**record, "task_id": names.get(task_id, "<an id outside the result graph>")}


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in a fixed order: tasks of a group run in parallel, in any order."""
    return sorted(records, key=lambda rec: json.dumps(rec, sort_keys=True))


def get_outcome(result: ResultBase, timeout: float) -> list[Any]:
    try:
        got = result.get(timeout=timeout, propagate=True)
    except CeleryTimeoutError:
        state = getattr(result, "state", None)
        return ["timeout", f"no outcome in {timeout:.0f}s; state {state}"]
    except Exception as exc:
        return error(type(exc), harness.without_ids(str(exc)))
    return value(got)


def observe(
    run: Run,
    result: ResultBase,
    timeout: float,
    min_callbacks: int = 0,
    min_signals: int = 0,
) -> dict[str, Any]:
    """Wait for ``result``, then for its records to settle; return the outcome."""
    outcome: dict[str, Any] = {"result": get_outcome(result, timeout)}
    names = labels(result)

    def snapshot() -> dict[str, Any]:
        return {
            "states": {label: r.state for label, r in walk(result)},
            "callbacks": sort_records([relabel(c, names) for c in run.callbacks()]),
            "signals": sort_records(run.signals()),
        }

    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = snapshot()
    while time.monotonic() < deadline:
        time.sleep(QUIET)
        now = snapshot()
        enough = len(now["callbacks"]) >= min_callbacks and len(now["signals"]) >= min_signals
        if now == last and enough:
            break
        last = now
    outcome.update(last)
    return outcome
