"""A checkout task in versions: the one a saved journal recorded, and changed ones.

``tests/fixtures/checkout-completed.json`` is the journal of the recorded version, as
``celery durable show ID --json`` prints it. Write it again with
``.venv/bin/python -m tests.unit.replay_shop``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from celery_durable import DurableTask, RetryPolicy
from celery_durable.testing import EAGER_CONFIG, JournalReader

FIXTURE = Path(__file__).parent.parent / "fixtures" / "checkout-completed.json"
TASK_ID = "9b2e4c1a-checkout-o-1"
QUICK = RetryPolicy(max_attempts=3, initial_interval=0.0)
#: Versions of the task body; ``recorded`` is the one that wrote the fixture.
VARIANTS = (
    "recorded", "inserted", "renamed", "removed", "returns-early", "other-result", "uuid",
)  # fmt: skip


class Shop:
    """What the steps do; counts calls, so a test can see that a replay ran none."""

    def __init__(self, failing_charges: int = 0) -> None:
        self.calls: list[str] = []
        self.failing_charges = failing_charges

    def reserve(self, order_id: str) -> dict[str, Any]:
        self.calls.append("reserve")
        return {"id": f"stock-{order_id}", "sku": "A1"}

    def charge(self, order_id: str, key: str) -> dict[str, Any]:
        self.calls.append("charge")
        if self.failing_charges:
            self.failing_charges -= 1
            raise ConnectionError("the card processor hung up")
        return {"id": f"ch-{key[:8]}", "amount": 4200}

    def ship(self, order_id: str) -> str:
        self.calls.append("ship")
        return f"parcel-{order_id}"


def make_checkout(variant: str = "recorded", shop: Shop | None = None) -> Any:
    """The ``shop.checkout`` task in one of the ``VARIANTS``, on an eager app of its own
    (an app keeps the first task registered under a name)."""
    assert variant in VARIANTS, variant
    shop = shop or Shop()
    app = Celery(f"shop-{variant}", set_as_current=False)
    # Celery raises an eager retry's Retry to the caller when errors propagate.
    app.conf.update(EAGER_CONFIG, task_eager_propagates=False)

    @app.task(base=DurableTask, bind=True, name="shop.checkout", shared=False)
    def checkout(self: DurableTask, order_id: str) -> dict[str, Any]:
        ctx = self.ctx
        ctx.run("reserve", shop.reserve, order_id)
        key = str(ctx.rand.uuid4())  # the same on every replay: the seed is journaled
        if variant == "inserted":
            ctx.run("fraud-check", lambda: True)
        name = "pay" if variant == "renamed" else "charge"
        charge = ctx.run(name, shop.charge, order_id, key, retry=QUICK)
        if variant == "returns-early":
            return {"status": "paid", "charge": charge["id"], "key": key}
        if variant != "removed":
            ctx.sleep(0.01, name="settle")
        ship = f"ship-{uuid.uuid4().hex[:6]}" if variant == "uuid" else "ship"
        parcel = ctx.run(ship, shop.ship, order_id)
        status = "charged" if variant == "other-result" else "paid"
        return {"status": status, "charge": charge["id"], "key": key, "parcel": parcel}

    return checkout


def write_fixture() -> None:
    checkout = make_checkout(shop=Shop(failing_charges=1))
    result = checkout.apply(args=("o-1",), task_id=TASK_ID)
    JournalReader(checkout.app).save(result.id, FIXTURE)
    print(f"wrote {FIXTURE}: {result.get()}")


if __name__ == "__main__":
    write_fixture()
