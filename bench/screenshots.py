"""Regenerate the README's screenshots of the console: ``python -m bench.screenshots``.

Runs the example project's orders on a private redis-server with a worker subprocess
(one order's worker is SIGKILLed in its charge step, as the demo does, so a step shows a
second attempt; one waits for a manager's approval), serves the console in this process,
and photographs two pages with Debian's Chromium (Playwright), into ``docs/images/``:

- ``console-list.png``: the list of invocations;
- ``console-invocation.png``: an approved order's page, its timeline, one step open.

Needs the ``ui`` and ``test`` extras, ``redis-server`` on PATH and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import ROOT, free_port, private_redis

OUT = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ITEMS = [{"sku": "BOOK-42", "qty": 2, "price_cents": 1250}]
DESK = [{"sku": "DESK-7", "qty": 10, "price_cents": 24900}]
GOOD = "4242-4242-4242-4242"


def start_worker(env: dict[str, str], queue: str, log: Path) -> subprocess.Popen[bytes]:
    name = f"shots-{uuid.uuid4().hex[:6]}@%h"
    command = [sys.executable, "-m", "celery", "-A", "example_project.app", "worker",
               "--pool=solo", "--loglevel=warning", "-Q", queue, "-n", name,
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def wait(condition: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def make_orders(url: str, prefix: str, log: Path) -> tuple[Any, str]:
    """Run the example's orders; return its app and the approved order's id."""
    env = dict(os.environ, REDIS_URL=url, EXAMPLE_PREFIX=prefix, PYTHONPATH=str(ROOT))
    os.environ.update(REDIS_URL=url, EXAMPLE_PREFIX=prefix)
    from celery_durable import get_invocation, resolve_awakeable
    from example_project import app as example
    from example_project.services import DECLINED_CARD

    def status(task_id: str) -> str | None:
        inv = get_invocation(example.app, task_id)
        return None if inv is None else inv.status

    def until(task_id: str, *statuses: str) -> None:
        wait(lambda: status(task_id) in statuses, f"{task_id} to be {statuses}")

    worker = start_worker(env, example.QUEUE, log)
    try:
        # The first order's worker dies in the charge step; the next worker finishes it.
        example.services.hold("charge_card")
        example.place_order.apply_async(("order-1001", ITEMS, GOOD, "1 Main St"),
                                        task_id="order-1001")  # fmt: skip
        wait(lambda: example.services.wait_reached("charge_card", 1), "the charge step")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        example.services.release("charge_card")
        worker = start_worker(env, example.QUEUE, log)
        until("order-1001", "completed")
        example.place_order.apply_async(("order-1002", ITEMS, DECLINED_CARD, "2 Side St"),
                                        task_id="order-1002")  # fmt: skip
        until("order-1002", "completed")
        approve = example.place_order_with_approval
        approve.apply_async(("order-1003", DESK, GOOD, "3 High St", 3600.0), task_id="order-1003")
        until("order-1003", "suspended")
        wait(lambda: example.services.outbox("order-1003"), "the approval email")
        time.sleep(0.4)  # the manager takes a moment
        awakeable_id = example.services.outbox("order-1003")[0]["approve_with"]
        resolve_awakeable(example.app, awakeable_id, {"approved_by": "Grace (sales manager)"})
        until("order-1003", "completed")
        approve.apply_async(("order-1004", DESK, GOOD, "4 Low St", 7200.0), task_id="order-1004")
        until("order-1004", "suspended")
        for n in range(1005, 1008):
            example.place_order.apply_async((f"order-{n}", ITEMS, GOOD, f"{n} Elm St"),
                                            task_id=f"order-{n}")  # fmt: skip
            until(f"order-{n}", "completed")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    return example.app, "order-1003"


def serve(asgi: Any) -> tuple[str, Any]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait(lambda: server.started, "the console")
    return f"http://127.0.0.1:{port}", server


def photograph(base: str, order: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 760}, device_scale_factor=1)
        page.goto(f"{base}/")
        page.wait_for_selector("table.invocations")
        page.screenshot(path=str(out / "console-list.png"))
        page.set_viewport_size({"width": 1360, "height": 1100})
        page.goto(f"{base}/invocation?id={order}")
        page.click("#step-2 > summary")  # the approval: the value it was resolved with
        page.wait_for_selector("#step-2 pre.json")  # fetched when the row opens
        page.screenshot(path=str(out / "console-invocation.png"), full_page=True)
        browser.close()
    print(f"wrote {out / 'console-list.png'} and {out / 'console-invocation.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = parser.parse_args()
    log = Path(f"/tmp/screenshots-worker-{uuid.uuid4().hex[:6]}.log")
    with private_redis() as url:
        prefix = "shop"
        app, order = make_orders(url, prefix, log)
        from celery_durable.web import create_app

        base, server = serve(create_app(app))
        try:
            photograph(base, order, args.out)
        finally:
            server.should_exit = True


if __name__ == "__main__":
    main()
