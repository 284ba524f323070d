"""The outside world of the order sagas: a fake price list, inventory, payment
provider, carrier and mail server.

Each call leaves a trace in Redis, outside the worker process: a counter per order
and step (``<prefix>:effects:<order>:<step>``) and an entry in a log list that names
the worker pid. A worker that is SIGKILLed cannot take these back, so the demo can
count how many times each side effect really happened.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis


class CardDeclined(Exception):
    """The provider refused the card. Retrying will not change its mind."""


#: The test card number that the fake provider always declines.
DECLINED_CARD = "4000-0000-0000-0002"


class Services:
    """The fake services, keeping their state under one Redis key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- The services ----------------------------------------------------------------

    def price(self, order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Price an order: the work of ``price_order``, a plain Celery task."""
        self._record(order_id, "price_order")
        total = sum(item["qty"] * item["price_cents"] for item in items)
        return {"total_cents": total, "lines": len(items)}

    def reserve_stock(self, order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        self._record(order_id, "reserve_stock")
        return {"reservation_id": f"res-{order_id}", "skus": [item["sku"] for item in items]}

    def release_stock(self, order_id: str, reservation_id: str) -> dict[str, Any]:
        self._record(order_id, "release_stock")
        return {"released": reservation_id}

    def charge(
        self, order_id: str, card: str, amount_cents: int, idempotency_key: str
    ) -> dict[str, Any]:
        """Charge a card once per idempotency key, like Stripe's ``Idempotency-Key``."""
        self._record(order_id, "charge_card", idempotency_key=idempotency_key)
        if card == DECLINED_CARD:
            raise CardDeclined(f"card ending {card[-4:]} was declined")
        charge = {"charge_id": f"ch_{idempotency_key[:8]}", "amount_cents": amount_cents}
        # The first request with a key creates the charge; a repeat gets the same charge
        # back instead of a second one. This is what makes the charge step safe to rerun.
        self.redis.hsetnx(self.key("charges"), idempotency_key, json.dumps(charge))
        recorded = self.charges()[idempotency_key]
        # The card has been charged but the step has not returned yet, so its result is
        # not in the journal: the worst moment for a crash. The demo kills the worker here.
        self.pause_point("charge_card")
        return recorded

    def ship(self, order_id: str, address: str) -> dict[str, Any]:
        self._record(order_id, "ship")
        return {"tracking": f"TRK-{order_id}", "to": address}

    def email_manager(self, order_id: str, total_cents: int, awakeable_id: str) -> dict[str, Any]:
        """Ask a manager to approve an order: the email carries the id to answer with."""
        self._record(order_id, "email_manager")
        email = {
            "order": order_id,
            "to": "manager@example.com",
            "subject": f"Approve {order_id} ({total_cents / 100:.2f} USD)?",
            "approve_with": awakeable_id,
        }
        self.redis.rpush(self.key("outbox"), json.dumps(email))
        return {"sent_to": email["to"]}

    # -- What the demo reads -----------------------------------------------------------

    def effect_count(self, order_id: str, step: str) -> int:
        return int(self.redis.get(self.key("effects", order_id, step)) or 0)

    def log(self, order_id: str) -> list[dict[str, Any]]:
        entries = (json.loads(e) for e in self.redis.lrange(self.key("log"), 0, -1))
        return [e for e in entries if e["order"] == order_id]

    def outbox(self, order_id: str) -> list[dict[str, Any]]:
        """The emails sent about ``order_id``, oldest first."""
        emails = (json.loads(e) for e in self.redis.lrange(self.key("outbox"), 0, -1))
        return [e for e in emails if e["order"] == order_id]

    def charges(self) -> dict[str, dict[str, Any]]:
        """Every charge the provider made, by idempotency key."""
        charges = self.redis.hgetall(self.key("charges"))
        return {str(key): json.loads(charge) for key, charge in charges.items()}

    def hold(self, point: str) -> None:
        """Make the next worker that reaches ``point`` wait there until ``release``."""
        # Expires on its own, so a demo that dies cannot leave a worker waiting forever.
        self.redis.set(self.key("hold", point), 1, ex=60)

    def release(self, point: str) -> None:
        self.redis.delete(self.key("hold", point))

    def wait_reached(self, point: str, timeout: float) -> int | None:
        """Return the pid of the worker that reached ``point``, or None after ``timeout``."""
        reply = self.redis.blpop([self.key("reached", point)], timeout=timeout)
        return None if reply is None else int(reply[1])

    # -- Internals -------------------------------------------------------------------

    def pause_point(self, point: str) -> None:
        """Tell the demo this point was reached, and wait here while it is held."""
        self.redis.rpush(self.key("reached", point), os.getpid())
        while self.redis.exists(self.key("hold", point)):
            time.sleep(0.05)

    def _record(self, order_id: str, step: str, **details: Any) -> None:
        entry = {"order": order_id, "step": step, "pid": os.getpid(), **details}
        pipe = self.redis.pipeline()
        pipe.incr(self.key("effects", order_id, step))
        pipe.rpush(self.key("log"), json.dumps(entry))
        pipe.execute()
