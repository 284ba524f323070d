"""Kill a worker in the middle of an order, start another, and show nothing happened twice.

Run it from the repository root: ``python -m example_project``. It needs a Redis
server (``REDIS_URL``, default ``redis://127.0.0.1:6379``) and exits 0 when every
check holds, 1 when one does not, and 2 when Redis cannot be reached.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery.result import AsyncResult

from celery_durable import Invocation, Step, get_invocation
from example_project.services import DECLINED_CARD, Services

ROOT = Path(__file__).resolve().parent.parent
ITEMS = [{"sku": "BOOK-42", "qty": 2, "price_cents": 1250}]
GOOD_CARD = "4242-4242-4242-4242"
TIMEOUT = 30.0


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


class Worker:
    """A ``celery worker`` subprocess. Solo pool: its one process also runs the task."""

    def __init__(self, env: dict[str, str], queue: str, name: str) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the worker
        command = [sys.executable, "-m", "celery", "-A", "example_project.app", "worker"]
        command += ["--pool=solo", "-c", "1", "--loglevel=warning", "-Q", queue, "-n", name]
        # Gossip, mingle and heartbeats only talk to other workers; without them the
        # worker starts sooner.
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        # A session of its own: killing its process group kills all of it, and a Ctrl-C
        # in this terminal reaches only the demo, which then stops the worker itself.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgement, nothing written on the way out."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().strip()


class Demo:
    """The two scenarios, and the workers they start."""

    def __init__(self, env: dict[str, str]) -> None:
        # Imported only now: the app reads REDIS_URL and EXAMPLE_PREFIX when imported.
        from example_project import app

        self.orders = app
        self.services: Services = app.services
        self.env = env
        self.workers: list[Worker] = []

    def start_worker(self) -> Worker:
        name = f"{self.orders.PREFIX}-{len(self.workers) + 1}@%h"
        worker = Worker(self.env, self.orders.QUEUE, name)
        self.workers.append(worker)
        print(f"   started worker pid {worker.pid}")
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def crash_and_resume(self) -> int:
        """Kill the worker inside the charge step; a fresh worker finishes the order."""
        order_id, services = "order-1", self.services
        print(f"1. {order_id}: kill the worker while it charges the card, then start another")
        first = self.start_worker()
        # The charge step waits at its pause point (the provider has charged the card, the
        # step has not returned) while this hold lasts: the kill always lands right there.
        services.hold("charge_card")
        result = self.orders.place_order.delay(order_id, ITEMS, GOOD_CARD, "1 Main St")
        print(f"   sent {order_id} as task {result.id}")
        self.wait_reached("charge_card", first)
        print(f"   worker pid {first.pid} is inside charge_card: card charged, not journaled")
        first.kill()
        killed_at = time.time()
        print(f"   sent SIGKILL to worker pid {first.pid}")
        services.release("charge_card")

        second = self.start_worker()
        timeout = self.orders.VISIBILITY_TIMEOUT
        print(f"   the unacknowledged message comes back after the {timeout} s visibility timeout")
        value = self.wait_result(result, second)
        print(f"   result: {describe(value)}\n")

        invocation = self.invocation(result.id)
        # A step journaled before the kill did not run in the second execution: it was
        # handed its journaled value. A step journaled after the kill ran in it.
        rows = [
            (s, "REPLAYED" if s.finished_at and s.finished_at.timestamp() < killed_at else "RAN")
            for s in invocation.steps
        ]
        self.print_journal(order_id, invocation, rows)

        attempts = [e for e in services.log(order_id) if e["step"] == "charge_card"]
        keys = {e["idempotency_key"] for e in attempts}
        charged = [key for key in services.charges() if key in keys]
        for e in attempts:
            print(f"   charge_card by pid {e['pid']} sent idempotency key {e['idempotency_key']}")
        print(f"   the payment provider made {len(charged)} charge(s) for {order_id}\n")

        count = functools.partial(self.services.effect_count, order_id)
        return check_all(
            (value.get("status") == "shipped", "the order shipped"),
            (invocation.status == "completed", "its journal is completed"),
            (
                [(s.name, label) for s, label in rows]
                == [("reserve_stock", "REPLAYED"), ("charge_card", "RAN"), ("ship", "RAN")],
                "after the crash reserve_stock was replayed; charge_card and ship ran",
            ),
            (count("reserve_stock") == 1, "reserve_stock ran once"),
            (
                count("charge_card") == 2
                and [e["pid"] for e in attempts] == [first.pid, second.pid],
                "charge_card ran twice, once per worker: the crash lost its first result",
            ),
            (
                keys == {value.get("idempotency_key")},
                "both attempts sent the same idempotency key, from ctx.rand.uuid4()",
            ),
            (len(charged) == 1, "so the provider charged the card once"),
            (count("ship") == 1, "ship ran once"),
        )

    def declined_card(self) -> int:
        """A declined card fails the charge for good; the saga releases the stock."""
        order_id = "order-2"
        print(f"\n2. {order_id}: the card is declined, so the reserved stock is released")
        result = self.orders.place_order.delay(order_id, ITEMS, DECLINED_CARD, "2 Side St")
        value = self.wait_result(result, self.workers[-1])
        print(f"   result: {describe(value)}\n")

        invocation = self.invocation(result.id)
        self.print_journal(order_id, invocation, [(s, "") for s in invocation.steps])
        count = functools.partial(self.services.effect_count, order_id)
        return check_all(
            (value.get("status") == "cancelled", "the order was cancelled"),
            (
                [(s.name, s.status) for s in invocation.steps]
                == [
                    ("reserve_stock", "completed"),
                    ("charge_card", "failed"),
                    ("release_stock", "completed"),
                ],
                "the journal holds the failed charge, then the compensating release_stock",
            ),
            (count("reserve_stock") == 1, "reserve_stock ran once"),
            (count("charge_card") == 1, "charge_card ran once"),
            (count("release_stock") == 1, "release_stock ran once"),
            (count("ship") == 0, "ship never ran"),
        )

    # -- Waiting and reading -------------------------------------------------------------

    def wait_reached(self, point: str, worker: Worker) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            pid = self.services.wait_reached(point, timeout=1)
            if pid == worker.pid:
                return
            if pid is not None:
                raise DemoFailed(f"{point} was reached by pid {pid}, not worker {worker.pid}")
            if not worker.alive():
                raise DemoFailed(f"worker pid {worker.pid} exited before reaching {point}")
        raise DemoFailed(f"worker pid {worker.pid} did not reach {point} in {TIMEOUT:.0f} s")

    def wait_result(self, result: AsyncResult, worker: Worker) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while not result.ready():
            if not worker.alive():
                raise DemoFailed(f"worker pid {worker.pid} exited before task {result.id} ended")
            if time.monotonic() > deadline:
                raise DemoFailed(f"task {result.id} did not finish in {TIMEOUT:.0f} s")
            time.sleep(0.1)
        if result.failed():
            raise DemoFailed(f"task {result.id} failed: {result.result!r}")
        value: dict[str, Any] = result.result
        return value

    def invocation(self, task_id: str) -> Invocation:
        invocation = get_invocation(self.orders.app, task_id)
        if invocation is None:
            raise DemoFailed(f"no journal was kept for task {task_id}")
        return invocation

    def print_journal(
        self, order_id: str, invocation: Invocation, rows: list[tuple[Step, str]]
    ) -> None:
        """Print the journal. ``runs`` counts the step's side effect, as seen from outside."""
        print(f"   journal of {order_id} ({invocation.status}):")
        after = "after crash " if any(label for _, label in rows) else ""
        print(f"   {'#':>2}  {'step':<14} {'status':<10} {'runs':>4}  {after}value")
        for step, label in rows:
            if step.error is None:
                value = json.dumps(step.value, separators=(",", ":"))
            else:
                value = f"{step.error['type']}: {step.error['message']}"
            runs = self.services.effect_count(order_id, step.name)
            label = f"{label:<12}" if after else ""
            print(
                f"   {step.index:>2}  {step.name:<14} {step.status:<10} {runs:>4}  {label}{value}"
            )
        print()


def check_all(*checks: tuple[bool, str]) -> int:
    """Print each check; return how many did not hold."""
    for ok, what in checks:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
    return sum(not ok for ok, _ in checks)


def describe(value: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items() if k != "order_id")


def redacted(url: str) -> str:
    """Return ``url`` without its password, fit to print."""
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if at else url


def main() -> int:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"Cannot reach Redis at {redacted(redis_url)}: {exc}", file=sys.stderr)
        print(
            "Start a Redis server (`redis-server`, or `docker run -p 6379:6379 redis`), "
            "or set REDIS_URL to one you can use, e.g. REDIS_URL=redis://host:6379/0.",
            file=sys.stderr,
        )
        return 2

    # A fresh prefix for every run: the keys, queue and journals of two runs never mix.
    prefix = f"example-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "EXAMPLE_PREFIX": prefix}
    os.environ.update(env)
    print(f"celery-durable demo on {redacted(redis_url)}, keys and queue under {prefix!r}\n")
    started = time.monotonic()
    demo = Demo(env)
    try:
        failures = demo.crash_and_resume() + demo.declined_card()
    except DemoFailed as exc:
        print(f"\nFAILED: {exc}")
        for worker in demo.workers:
            print(f"\n--- output of worker pid {worker.pid} ---\n{worker.output()}")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers and deleting this run's keys")
        return 130
    finally:
        demo.stop_workers()
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)

    took = time.monotonic() - started
    if failures:
        print(f"\nFAILED: {failures} check(s) did not hold ({took:.1f} s)")
        return 1
    print(f"\nPASS: no side effect took effect twice ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
