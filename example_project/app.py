"""The Celery app and its tasks: two order sagas with compensation, and a plain task.

- ``place_order`` reserves stock, charges the card and ships.
- ``place_order_with_approval`` prices the order with a child task (``ctx.call``),
  emails a manager for approval and waits for the answer (an awakeable) or a
  timeout (a durable timer), whichever comes first (``ctx.any``). While it waits it
  is suspended: no worker slot is held, and a worker may die meanwhile.
- ``price_order`` is an ordinary Celery task, called as a child.

Run a worker with ``celery -A example_project.app worker``. The app reads its
configuration from the environment when imported, because that is how the demo
driver (``python -m example_project``) hands it to the workers it starts:

- ``REDIS_URL``: broker, result backend, journals and the fake services.
- ``EXAMPLE_PREFIX``: the key prefix of everything this app stores in Redis, and
  the name of its queue, so that two runs of the demo never see each other's data.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from celery_durable import DurableTask, TerminalError
from example_project.services import CardDeclined, Services

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("EXAMPLE_PREFIX", "example")
QUEUE = f"{PREFIX}.orders"

#: Seconds before a message that was delivered but not acknowledged goes back to the
#: queue. Two seconds makes the demo quick. In production it must be longer than your
#: longest task, or a healthy worker's task is handed to a second worker while it runs.
VISIBILITY_TIMEOUT = 2

app = Celery("example_project", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT,
        # Look for unacknowledged messages to give back every second (kombu's default
        # is every 100 seconds), so the killed worker's message returns promptly.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # Keep kombu's keys (the queue, the unacked index) under this run's prefix.
        "global_keyprefix": f"{PREFIX}:",
    },
    result_backend_transport_options={"global_keyprefix": f"{PREFIX}:"},
    broker_connection_retry_on_startup=True,
    # Take one message at a time: a worker that dies holds no others hostage.
    worker_prefetch_multiplier=1,
    durable_redis_url=REDIS_URL,
    durable_key_prefix=PREFIX,
    durable_retention=3600,
    # An execution owns its order for this long between heartbeats. It must be shorter
    # than the visibility timeout: a killed worker's lease is then over by the time its
    # message comes back, and the new worker starts at once.
    durable_lease_ttl=1,
)

services = Services(redis.Redis.from_url(REDIS_URL, decode_responses=True), PREFIX)


def charge_card(
    order_id: str, card: str, amount_cents: int, idempotency_key: str
) -> dict[str, Any]:
    """Charge the card; a declined card is a TerminalError, because retrying cannot help."""
    try:
        return services.charge(order_id, card, amount_cents, idempotency_key)
    except CardDeclined as exc:
        raise TerminalError(str(exc), {"code": "card_declined"}) from exc


@app.task(base=DurableTask, bind=True, name="example_project.place_order")  # type: ignore[untyped-decorator]
def place_order(
    self: DurableTask, order_id: str, items: list[dict[str, Any]], card: str, address: str
) -> dict[str, Any]:
    """Reserve stock, charge the card, ship; release the stock if the charge fails for good.

    Each ``ctx.run`` step runs once per order. When the message comes back after a
    crash, the steps that finished return their journaled values without running.
    """
    ctx = self.ctx
    reservation = ctx.run("reserve_stock", services.reserve_stock, order_id, items)

    # Drawn from the invocation's journaled seed: every execution of this order gets the
    # same key, so a charge that is sent again after a crash is one the provider has
    # already seen, and it does not charge the card a second time.
    idempotency_key = str(ctx.rand.uuid4())
    amount_cents = sum(item["qty"] * item["price_cents"] for item in items)
    try:
        charge = ctx.run("charge_card", charge_card, order_id, card, amount_cents, idempotency_key)
    except TerminalError as exc:
        # Compensate: the stock was reserved for an order that will not be paid.
        ctx.run("release_stock", services.release_stock, order_id, reservation["reservation_id"])
        return {"order_id": order_id, "status": "cancelled", "reason": exc.message}

    shipment = ctx.run("ship", services.ship, order_id, address)
    return {
        "order_id": order_id,
        "status": "shipped",
        "charge_id": charge["charge_id"],
        "idempotency_key": idempotency_key,
        "tracking": shipment["tracking"],
    }


@app.task(name="example_project.price_order")  # type: ignore[untyped-decorator]
def price_order(order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A plain Celery task: nothing durable about it, but a durable task can call it."""
    return services.price(order_id, items)


@app.task(base=DurableTask, bind=True, name="example_project.place_order_with_approval")  # type: ignore[untyped-decorator]
def place_order_with_approval(
    self: DurableTask,
    order_id: str,
    items: list[dict[str, Any]],
    card: str,
    address: str,
    approval_timeout: float,
) -> dict[str, Any]:
    """Price the order, reserve stock, and charge and ship only once a manager approves.

    The manager gets an email with an awakeable id and answers with
    ``resolve_awakeable(app, awakeable_id, {"approved_by": ...})`` (or
    ``reject_awakeable``). Without an answer within ``approval_timeout`` seconds the
    order is cancelled and its stock released. Waiting for the child, the answer or
    the timeout suspends the invocation: the worker acknowledges the message and
    takes other work, and the invocation is delivered again when what it waits for
    has come.
    """
    ctx = self.ctx
    # A child task, started once: its task id is derived from this invocation's.
    quote = ctx.call(price_order.s(order_id, items), name="price_order").result()
    reservation = ctx.run("reserve_stock", services.reserve_stock, order_id, items)

    # The same id on every replay: the email is sent once, and an answer to it reaches
    # this invocation whichever worker runs it by then.
    awakeable_id, approval = ctx.awakeable("approval")
    ctx.run("email_manager", services.email_manager, order_id, quote["total_cents"], awakeable_id)
    deadline = ctx.timer(approval_timeout, name="approval_timeout")
    # The position of the first to complete; journaled, so a replay takes the same branch
    # even if an approval comes in after the timeout.
    first = ctx.any(approval, deadline, name="approval_or_timeout").result()

    def cancel(reason: str) -> dict[str, Any]:
        ctx.run("release_stock", services.release_stock, order_id, reservation["reservation_id"])
        return {"order_id": order_id, "status": "cancelled", "reason": reason}

    if first == 1:
        return cancel(f"no approval within {approval_timeout:g} s")
    try:
        approved = approval.result()
    except TerminalError as exc:  # reject_awakeable(app, awakeable_id, "why")
        return cancel(f"rejected: {exc.message}")

    idempotency_key = str(ctx.rand.uuid4())
    try:
        charge = ctx.run(
            "charge_card", charge_card, order_id, card, quote["total_cents"], idempotency_key
        )
    except TerminalError as exc:
        return cancel(exc.message)

    shipment = ctx.run("ship", services.ship, order_id, address)
    return {
        "order_id": order_id,
        "status": "shipped",
        "approved_by": approved["approved_by"],
        "total_cents": quote["total_cents"],
        "charge_id": charge["charge_id"],
        "tracking": shipment["tracking"],
    }
