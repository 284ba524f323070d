"""Kill workers in the middle of orders, start others, and show nothing happened twice.

Four orders, one after the other:

1. ``place_order``: the worker is SIGKILLed inside the charge step; a fresh worker
   finishes the order, replaying what was journaled.
2. ``place_order``: the card is declined; the saga releases the stock.
3. ``place_order_with_approval``: the order waits, suspended, for a manager's
   approval; the worker is SIGKILLed meanwhile; a fresh worker is started, the
   approval is sent from this process (``resolve_awakeable``), and the order ships.
4. ``place_order_with_approval``: nobody approves; the timer wins and the order is
   cancelled.

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

from celery_durable import Invocation, Step, get_invocation, resolve_awakeable
from example_project.services import DECLINED_CARD, Services

ROOT = Path(__file__).resolve().parent.parent
ITEMS = [{"sku": "BOOK-42", "qty": 2, "price_cents": 1250}]
#: The order sent to ``place_order_with_approval``: a big one, for a manager to approve.
LARGE_ITEMS = [{"sku": "DESK-7", "qty": 10, "price_cents": 24900}]
GOOD_CARD = "4242-4242-4242-4242"
TIMEOUT = 30.0
#: Seconds order-3 may wait for its approval: far more than the demo takes to give it.
APPROVAL_TIMEOUT = 60.0
#: Seconds order-4 waits for an approval that never comes.
SHORT_APPROVAL_TIMEOUT = 3.0
MANAGER = "Grace (sales manager)"


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

    def approval_survives_a_kill(self) -> int:
        """The order waits, suspended, for an approval; its worker dies; another finishes it."""
        order_id, services = "order-3", self.services
        print(f"\n3. {order_id}: waits for a manager's approval; the worker is killed meanwhile")
        worker = self.workers[-1]
        result = self.orders.place_order_with_approval.delay(
            order_id, LARGE_ITEMS, GOOD_CARD, "3 High St", APPROVAL_TIMEOUT
        )
        print(f"   sent {order_id} as task {result.id}, approval timeout {APPROVAL_TIMEOUT:g} s")
        waiting = self.wait_suspended(result.id, worker, "awakeable")
        print(f"   {order_id} is {waiting.status}, awaiting:{awaited(waiting)}")
        email = self.email(order_id)
        awakeable_id = email["approve_with"]
        print(
            f"   email to {email['to']}: {email['subject']!r}, approve with {awakeable_id[:20]}..."
        )
        in_flight = self.unacknowledged()
        print(f"   the broker holds {in_flight} unacknowledged message(s): no worker slot is held")

        before = self.invocation(result.id)
        worker.kill()
        print(f"   sent SIGKILL to worker pid {worker.pid}, {len(before.steps)} entries journaled")
        fresh = self.start_worker()
        still = self.invocation(result.id)
        print(f"   after the kill {order_id} is still {still.status}, awaiting:{awaited(still)}")
        resolved = resolve_awakeable(self.orders.app, awakeable_id, {"approved_by": MANAGER})
        # From this process: it completes the awakeable and publishes the order again.
        print(f"   resolve_awakeable(app, id, {{'approved_by': {MANAGER!r}}}) -> {resolved}")
        value = self.wait_result(result, fresh)
        print(f"   result: {describe(value)}")
        again = resolve_awakeable(self.orders.app, awakeable_id, {"approved_by": "someone else"})
        print(f"   a second answer, after the order finished: resolve_awakeable -> {again}\n")

        invocation = self.invocation(result.id)
        # Entries journaled before the kill were handed back to the fresh worker's execution;
        # the approval came in after it; the rest ran in the fresh worker.
        rows = []
        for step in invocation.steps:
            if step.index >= len(before.steps):
                rows.append((step, "RAN"))
            elif before.steps[step.index].status == "waiting" and step.status != "waiting":
                rows.append((step, "RESOLVED"))
            else:
                rows.append((step, "REPLAYED"))
        self.print_journal(order_id, invocation, rows, label="after kill")

        count = functools.partial(services.effect_count, order_id)
        by_name = {s.name: s for s in invocation.steps}
        return check_all(
            (value.get("status") == "shipped", "the order shipped"),
            (value.get("approved_by") == MANAGER, f"approved by {MANAGER}"),
            (invocation.status == "completed", "its journal is completed"),
            (
                [(s.kind, s.name, label) for s, label in rows]
                == [
                    ("call", "price_order", "REPLAYED"),
                    ("run", "reserve_stock", "REPLAYED"),
                    ("awakeable", "approval", "RESOLVED"),
                    ("run", "email_manager", "REPLAYED"),
                    ("sleep", "approval_timeout", "REPLAYED"),
                    ("any", "approval_or_timeout", "RAN"),
                    ("run", "charge_card", "RAN"),
                    ("run", "ship", "RAN"),
                ],
                "the journal: call, steps, awakeable, timer, any; the approval won",
            ),
            (
                waiting.status == "suspended"
                and {a["kind"] for a in waiting.awaiting} == {"awakeable", "sleep"},
                "while it waited it was suspended, awaiting the awakeable and the timer",
            ),
            (in_flight == 0, "the suspended order held no message: the kill took nothing"),
            (still.status == "suspended", "it stayed suspended across the kill"),
            (resolved and not again, "the first answer completed the awakeable, the second not"),
            (
                by_name["approval"].value == {"approved_by": MANAGER},
                "the journal holds the manager's answer",
            ),
            (count("price_order") == 1, "the price_order child ran once"),
            (count("reserve_stock") == 1, "reserve_stock ran once"),
            (count("email_manager") == 1, "email_manager ran once: one email was sent"),
            (count("charge_card") == 1, "charge_card ran once"),
            (count("ship") == 1, "ship ran once"),
            (count("release_stock") == 0, "release_stock never ran"),
        )

    def approval_times_out(self) -> int:
        """Nobody approves: the timer completes first, and the saga releases the stock."""
        order_id, services = "order-4", self.services
        wait = SHORT_APPROVAL_TIMEOUT
        print(f"\n4. {order_id}: nobody approves it, so it is cancelled after {wait:g} s")
        worker = self.workers[-1]
        result = self.orders.place_order_with_approval.delay(
            order_id, LARGE_ITEMS, GOOD_CARD, "4 Low St", wait
        )
        waiting = self.wait_suspended(result.id, worker, "awakeable")
        print(f"   {order_id} is {waiting.status}, awaiting:{awaited(waiting)}")
        print("   nobody answers the email")
        value = self.wait_result(result, worker)
        print(f"   result: {describe(value)}")
        email = self.email(order_id)
        late = resolve_awakeable(self.orders.app, email["approve_with"], {"approved_by": MANAGER})
        print(f"   an approval after the timeout: resolve_awakeable -> {late}\n")

        invocation = self.invocation(result.id)
        self.print_journal(order_id, invocation, [(s, "") for s in invocation.steps])
        count = functools.partial(services.effect_count, order_id)
        return check_all(
            (value.get("status") == "cancelled", "the order was cancelled"),
            (invocation.status == "completed", "its journal is completed"),
            (
                [(s.kind, s.name) for s in invocation.steps]
                == [
                    ("call", "price_order"),
                    ("run", "reserve_stock"),
                    ("awakeable", "approval"),
                    ("run", "email_manager"),
                    ("sleep", "approval_timeout"),
                    ("any", "approval_or_timeout"),
                    ("run", "release_stock"),
                ],
                "the journal: the timer won the any, then the compensating release_stock",
            ),
            (
                [s.value.get("w") for s in invocation.steps if s.kind == "any"] == [1],
                "position 1, the timer, completed first",
            ),
            (not late, "the late approval was refused: the order had finished"),
            (count("price_order") == 1, "the price_order child ran once"),
            (count("reserve_stock") == 1, "reserve_stock ran once"),
            (count("email_manager") == 1, "email_manager ran once"),
            (count("release_stock") == 1, "release_stock ran once"),
            (count("charge_card") == 0, "charge_card never ran"),
            (count("ship") == 0, "ship never ran"),
        )

    # -- Waiting and reading -------------------------------------------------------------

    def wait_suspended(self, task_id: str, worker: Worker, kind: str) -> Invocation:
        """Wait until the invocation is suspended, awaiting an operation of ``kind``."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            invocation = get_invocation(self.orders.app, task_id)
            if (
                invocation is not None
                and invocation.status == "suspended"
                and any(a["kind"] == kind for a in invocation.awaiting)
            ):
                return invocation
            if not worker.alive():
                raise DemoFailed(f"worker pid {worker.pid} exited before task {task_id} waited")
            time.sleep(0.05)
        raise DemoFailed(f"task {task_id} did not suspend awaiting a {kind} in {TIMEOUT:.0f} s")

    def email(self, order_id: str) -> dict[str, Any]:
        """The approval request sent about ``order_id`` (the checks count repeats)."""
        emails = self.services.outbox(order_id)
        if not emails:
            raise DemoFailed(f"no approval email was sent for {order_id}")
        return emails[0]

    def unacknowledged(self, settle: float = 5.0) -> int:
        """How many delivered messages the broker still waits to hear back about.

        kombu's Redis transport keeps them in the ``unacked`` hash (under this run's
        prefix) until the worker acknowledges them. A suspended invocation's message was
        acknowledged as it suspended: wait up to ``settle`` seconds for that.
        """
        key = f"{self.orders.PREFIX}:unacked"
        deadline = time.monotonic() + settle
        while (count := int(self.services.redis.hlen(key))) and time.monotonic() < deadline:
            time.sleep(0.05)
        return count

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
        self, order_id: str, invocation: Invocation, rows: list[tuple[Step, str]],
        label: str = "after crash",
    ) -> None:  # fmt: skip
        """Print the journal. ``runs`` counts the step's side effect, as seen from outside
        (a ``call`` step's is the child task's); waiting operations have none."""
        print(f"   journal of {order_id} ({invocation.status}):")
        label = f"{label:<12}" if any(text for _, text in rows) else ""
        print(f"   {'#':>2}  {'kind':<9} {'step':<19} {'status':<9} {'runs':>4}  {label}value")
        for step, text in rows:
            if step.kind in ("run", "call"):
                runs = str(self.services.effect_count(order_id, step.name))
            else:
                runs = "-"
            text = f"{text:<12}" if label else ""
            print(
                f"   {step.index:>2}  {step.kind:<9} {step.name:<19} {step.status:<9} {runs:>4}  "
                f"{text}{shown(step)}"
            )
        print()


def check_all(*checks: tuple[bool, str]) -> int:
    """Print each check; return how many did not hold."""
    for ok, what in checks:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
    return sum(not ok for ok, _ in checks)


def shown(step: Step) -> str:
    """A journal entry's value, fit for one line."""
    if step.error is not None:
        return f"{step.error['type']}: {step.error['message']}"
    if step.kind == "sleep" and step.started_at and step.finished_at:
        due = f"due {(step.finished_at - step.started_at).total_seconds():g} s after it was set"
        if step.status == "waiting":  # a timer that lost its race is never waited for again
            due += f", {step.finished_at.timestamp() - time.time():.0f} s from now"
        return due
    if step.kind == "any":
        return f"position {step.value['w']} completed first"
    if step.status == "waiting":
        return "no outcome"
    return json.dumps(step.value, separators=(",", ":"))


def awaited(invocation: Invocation) -> str:
    """What a suspended invocation waits for, one line each."""
    waits = []
    for a in invocation.awaiting:
        what = f"{a['kind']:<9} {a['name']!r} (journal #{a['index']})"
        if a.get("until") is not None:
            what += f", due in {a['until'] - time.time():.1f} s"
        waits.append(f"\n     - {what}")
    return "".join(waits) or " nothing"


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
        failures += demo.approval_survives_a_kill() + demo.approval_times_out()
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
