"""Crash a worker in the middle of an order, start another, and show nothing ran twice.

Run from the repository root: ``python -m example_project``. It needs a Redis server
(``REDIS_URL``, default ``redis://127.0.0.1:6379``) and exits 0 when every check
passes, 1 when one fails, 2 when Redis cannot be reached.
"""

from __future__ import annotations

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

from example_project.services import DECLINED_CARD

ROOT = Path(__file__).resolve().parent.parent
ITEMS = [{"sku": "BOOK-42", "qty": 2, "price_cents": 1250}]
GOOD_CARD = "4242-4242-4242-4242"
RESULT_TIMEOUT = 30.0


class DemoFailed(Exception):
    """The demo could not go on; the message says why."""


class Worker:
    """A ``celery worker`` subprocess: solo pool, so its one pid also runs the task."""

    def __init__(self, env: dict[str, str], queue: str, name: str) -> None:
        self.log = tempfile.TemporaryFile("w+")
        command = [sys.executable, "-m", "celery", "-A", "example_project.app", "worker"]
        command += ["--pool=solo", "-c", "1", "--loglevel=warning", "-Q", queue, "-n", name]
        # Gossip, mingle and heartbeats only talk to other workers; without them the
        # worker starts faster and leaves no broadcast keys behind.
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        # A session (process group) of its own: killing the group kills the worker and
        # anything it started, and a Ctrl-C in this terminal does not reach it.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgement, no chance to clean up."""
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
        return self.log.read()


def main() -> int:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"Cannot reach Redis at {redis_url}: {exc}", file=sys.stderr)
        print(
            "Start one (`redis-server`, or `docker run -p 6379:6379 redis`), "
            "or set REDIS_URL to a Redis you can use, e.g. REDIS_URL=redis://host:6379/0.",
            file=sys.stderr,
        )
        return 2

    # A fresh prefix per run: keys, queue and journals of two runs never mix.
    prefix = f"example-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "EXAMPLE_PREFIX": prefix}
    os.environ.update(env)
    # Imported only now: the app reads REDIS_URL and EXAMPLE_PREFIX when imported.
    from example_project import app as orders

    print(f"celery-durable demo: Redis {redis_url}, keys and queue under {prefix!r}\n")
    started = time.monotonic()
    workers: list[Worker] = []

    def start_worker() -> Worker:
        worker = Worker(env, orders.QUEUE, f"{prefix}-{len(workers) + 1}@%h")
        workers.append(worker)
        return worker

    try:
        failures = crash_and_resume(orders, start_worker)
        failures += declined_card(orders, workers[-1])
    except DemoFailed as exc:
        print(f"\nFAILED: {exc}")
        for worker in workers:
            print(f"\n--- output of worker pid {worker.pid} ---\n{worker.output().strip()}")
        return 1
    finally:
        for worker in workers:
            worker.stop()
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)

    took = time.monotonic() - started
    if failures:
        print(f"\nFAILED: {failures} check(s) did not hold ({took:.1f} s).")
        return 1
    print(f"\nPASS: every side effect happened exactly once ({took:.1f} s).")
    return 0


def crash_and_resume(orders: Any, start_worker: Any) -> int:
    services = orders.services
    order_id = "order-1"
    print(f"1. {order_id}: kill the worker while it is charging the card, then resume")

    first = start_worker()
    print(f"   started worker pid {first.pid}")
    # The charge step will wait at its pause point (after the provider charged the card,
    # before the step returns) until released: the kill always lands at that moment.
    services.hold("charge_card")
    result = orders.place_order.delay(order_id, ITEMS, GOOD_CARD, "1 Main St")
    print(f"   sent {order_id} as task {result.id}")
    reached_by = wait_reached(services, "charge_card", first)
    if reached_by != first.pid:
        raise DemoFailed(f"the charge step ran in pid {reached_by}, not in worker {first.pid}")

    first.kill()
    killed_at = time.time()
    print(f"   worker pid {first.pid} is inside charge_card: card charged, step not journaled")
    print(f"   sent SIGKILL to worker pid {first.pid}")
    services.release("charge_card")

    second = start_worker()
    print(f"   started worker pid {second.pid}; the unacknowledged message returns after the")
    print(f"   {orders.VISIBILITY_TIMEOUT} s visibility timeout and the task runs again")
    value = wait_result(result, second)
    print(f"   result: {json.dumps(value)}\n")

    invocation = orders_invocation(orders, result.id)
    rows = []
    for step in invocation.steps:
        # A step journaled before the kill was not run by the second execution: it was
        # handed its journaled value. One journaled after the kill ran in the second one.
        journaled_before = step.finished_at is not None and step.finished_at.timestamp() < killed_at
        rows.append((step, "REPLAYED" if journaled_before else "RAN"))
    print_journal(invocation, rows, services, order_id, "2nd execution")

    log = services.log(order_id)
    keys = {e["idempotency_key"] for e in log if e["step"] == "charge_card"}
    pids = [e["pid"] for e in log if e["step"] == "charge_card"]
    charged = [k for k, c in services.charges().items() if k in keys]
    print(f"   charge_card ran in pids {pids} with idempotency keys {sorted(keys)}")
    print(f"   the payment provider holds {len(charged)} charge(s) for {order_id}\n")

    count = services.effect_count
    return check_all(
        [
            (value.get("status") == "shipped", f"{order_id} shipped: status {value.get('status')}"),
            (invocation.status == "completed", "the journal says completed"),
            (
                [s.name for s, _ in rows] == ["reserve_stock", "charge_card", "ship"]
                and [label for _, label in rows] == ["REPLAYED", "RAN", "RAN"],
                "reserve_stock was replayed from the journal; charge_card and ship ran after it",
            ),
            (count(order_id, "reserve_stock") == 1, "reserve_stock ran once"),
            (
                count(order_id, "charge_card") == 2 and pids == [first.pid, second.pid],
                "charge_card ran twice, once in each worker (its result was lost with the first)",
            ),
            (
                len(keys) == 1 and keys == {value.get("idempotency_key")},
                "both attempts sent the same idempotency key, drawn with ctx.rand.uuid4()",
            ),
            (len(charged) == 1, "so the provider charged the card once"),
            (count(order_id, "ship") == 1, "ship ran once"),
        ]
    )


def declined_card(orders: Any, worker: Worker) -> int:
    services = orders.services
    order_id = "order-2"
    print(f"\n2. {order_id}: the card is declined, so the reservation is released")
    result = orders.place_order.delay(order_id, ITEMS, DECLINED_CARD, "2 Side St")
    value = wait_result(result, worker)
    print(f"   result: {json.dumps(value)}\n")

    invocation = orders_invocation(orders, result.id)
    print_journal(invocation, [(s, None) for s in invocation.steps], services, order_id)
    count = services.effect_count
    return check_all(
        [
            (value.get("status") == "cancelled", f"{order_id} cancelled: {value.get('reason')}"),
            (
                [(s.name, s.status) for s in invocation.steps]
                == [
                    ("reserve_stock", "completed"),
                    ("charge_card", "failed"),
                    ("release_stock", "completed"),
                ],
                "the declined charge is journaled as failed, then release_stock compensates",
            ),
            (count(order_id, "reserve_stock") == 1, "reserve_stock ran once"),
            (count(order_id, "charge_card") == 1, "charge_card ran once and charged nothing"),
            (count(order_id, "release_stock") == 1, "release_stock ran once"),
            (count(order_id, "ship") == 0, "ship never ran"),
        ]
    )


# -- Helpers ---------------------------------------------------------------------------


def wait_reached(services: Any, point: str, worker: Worker, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = services.wait_reached(point, timeout=1)
        if pid is not None:
            return int(pid)
        if not worker.alive():
            raise DemoFailed(f"worker pid {worker.pid} exited before reaching {point}")
    raise DemoFailed(f"no worker reached {point} within {timeout:.0f} s")


def wait_result(result: Any, worker: Worker) -> dict[str, Any]:
    deadline = time.monotonic() + RESULT_TIMEOUT
    while time.monotonic() < deadline:
        if result.ready():
            value: dict[str, Any] = result.get(timeout=5)
            return value
        if not worker.alive():
            raise DemoFailed(f"worker pid {worker.pid} exited before task {result.id} finished")
        time.sleep(0.1)
    raise DemoFailed(f"task {result.id} did not finish within {RESULT_TIMEOUT:.0f} s")


def orders_invocation(orders: Any, task_id: str) -> Any:
    from celery_durable import get_invocation

    invocation = get_invocation(orders.app, task_id)
    if invocation is None:
        raise DemoFailed(f"no journal kept for task {task_id}")
    return invocation


def print_journal(
    invocation: Any, rows: list[tuple[Any, str | None]], services: Any, order_id: str, extra=""
) -> None:
    print(f"   journal of {order_id} (status {invocation.status}):")
    header = f"   {'#':>2}  {'step':<14} {'status':<10} {'runs':>4}  {extra:<14}value"
    print(header)
    for step, label in rows:
        value = json.dumps(step.value) if step.error is None else step.error.get("message")
        runs = services.effect_count(order_id, step.name)
        print(
            f"   {step.index:>2}  {step.name:<14} {step.status:<10} {runs:>4}  "
            f"{label or '':<14}{shorten(str(value), 50)}"
        )
    print()


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def check_all(checks: list[tuple[bool, str]]) -> int:
    for ok, what in checks:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
    return sum(not ok for ok, _ in checks)


if __name__ == "__main__":
    sys.exit(main())
