"""Measure the Redis round trips of each awaitable operation, and the wake-up latency.

Not a test: ``.venv/bin/python -m tests.awaitables.measure``. Journals go to a private
``redis-server`` (on a free port), watched with ``MONITOR``; the broker, the results
and the workers' records stay on the main Redis, so every command seen is journal
traffic. Each command is named by what it is (``EVALSHA`` by its script's name).

Phases, each between markers:
  A. ``ops`` starts: a step, an awakeable, a step, a timer, a child call, then
     ``all(awakeable, timer, child)`` suspends. The child runs, completes, wakes the
     parent, which replays and suspends again.
  B. the test process resolves the awakeable: the parent wakes, replays, suspends.
  C. the timer is due: a worker's wake-up component wakes it; it completes.
Then: wake-up latency (timer due -> body running again) over a few sleeps.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import redis

from celery_durable import resolve_awakeable
from celery_durable.stores.redis import scripts
from tests.awaitables import names
from tests.awaitables.world import REDIS_URL, World
from tests.processes import RedisServer, wait_for

_SCRIPTS = {script.sha: script.name for script in scripts.ALL}


class Monitor:
    """Collects MONITOR lines of a Redis server in a thread."""

    def __init__(self, url: str) -> None:
        self.lines: list[tuple[str, str]] = []
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            for event in monitor.listen():
                if event.get("client_type") == "lua":
                    continue  # inside a script: not a round trip
                client = f"{event.get('client_address')}:{event.get('client_port')}"
                self.lines.append((client, str(event.get("command", ""))))

    def mark(self, client: redis.Redis, label: str) -> None:
        client.echo(f"MARK {label}")
        wait_for(lambda: any(f"MARK {label}" in c for _, c in self.lines), f"marker {label}")


def name_of(command: str) -> str:
    """A MONITOR command as a name: a script by its file, else the command's first words."""
    words = command.split(" ")
    head = words[0].strip('"').upper()
    if head in ("EVALSHA", "EVAL") and len(words) > 1:
        sha = words[1].strip('"')
        return f"script {_SCRIPTS.get(sha, sha[:8])}"
    if head == "HMGET" and len(words) > 3:
        return "HMGET " + " ".join(w.strip('"') for w in words[2:])
    if head == "HGETALL" and len(words) > 1:
        return "HGETALL " + words[1].strip('"').rsplit(":", 1)[-1]
    if head == "LRANGE":
        return "LRANGE journal"
    return head


def phase(monitor: Monitor, start: str, end: str) -> list[tuple[str, str]]:
    """The commands between two markers, as (client, name), leaving out our own polls."""
    labels = [c for _, c in monitor.lines]
    first = next(i for i, c in enumerate(labels) if f"MARK {start}" in c)
    last = next(i for i, c in enumerate(labels) if f"MARK {end}" in c)
    named = [(client, name_of(command)) for client, command in monitor.lines[first + 1 : last]]
    return [(client, name) for client, name in named if name not in ("ECHO", "HGET")]


def summary(commands: list[tuple[str, str]]) -> str:
    """How many round trips the commands are: a MULTI ... EXEC block is one."""
    trips, queued = 0, False
    for _, name in commands:
        if name == "MULTI":
            queued = True
            trips += 1
        elif name == "EXEC":
            queued = False
        elif not queued:
            trips += 1
    counts = Counter(name for _, name in commands)
    body = ", ".join(f"{name} x{n}" for name, n in counts.most_common())
    return f"{trips} round trips ({len(commands)} commands): {body}"


def main() -> None:
    server = RedisServer()
    server.start()
    journal_url = server.url
    private = redis.Redis.from_url(journal_url, decode_responses=True)
    main_client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    tmp = Path(f"/tmp/aw-measure-{uuid.uuid4().hex[:6]}")
    tmp.mkdir()
    world = World(f"aw-{uuid.uuid4().hex[:10]}", tmp, main_client, journal_url=journal_url)
    try:
        world.start_worker()
        monitor = Monitor(journal_url)
        time.sleep(1.0)
        idle_start = len(monitor.lines)
        time.sleep(2.0)
        idle = [name_of(c) for _, c in monitor.lines[idle_start:]]
        print(f"idle worker, 2 s: {Counter(idle)}")

        monitor.mark(private, "A")
        result = world.send(names.OPS, 3.0)
        task_id = result.id
        meta = world.keys.invocation(task_id).meta

        def settled_after_child() -> bool:
            entered = len(world.bodies(task_id)) >= 2
            return entered and private.hget(meta, "status") == "suspended"

        wait_for(settled_after_child, "the parent to be woken by its child and suspend again")
        time.sleep(0.3)
        monitor.mark(private, "A-end")
        awakeable_id = world.awakeable_id(task_id, "approval")

        monitor.mark(private, "B")
        resolve_awakeable(world.app, awakeable_id, "yes")
        wait_for(lambda: len(world.bodies(task_id)) >= 3, "the resolution's wake-up")
        wait_for(lambda: private.hget(meta, "status") == "suspended", "suspended again")
        time.sleep(0.3)
        monitor.mark(private, "B-end")

        monitor.mark(private, "C")
        assert result.get(timeout=30) == ["yes", None, 8]
        time.sleep(0.3)
        monitor.mark(private, "C-end")

        for label, start, end in (
            ("A. start, step, awakeable, step, timer, call, suspend; child wakes it", "A", "A-end"),
            ("B. resolve_awakeable from outside; the parent wakes and suspends", "B", "B-end"),
            ("C. the timer's wake-up; the parent completes", "C", "C-end"),
        ):
            commands = phase(monitor, start, end)
            print(f"\n{label}\n  {summary(commands)}")
            for client, name in commands:
                print(f"    {client:>22}  {name}")

        latencies = []
        naps = [world.send(names.NAP, 1.0 + 0.15 * i) for i in range(9)]
        for nap in naps:
            assert nap.get(timeout=30) == "rested"
            inv = world.invocation(nap.id)
            [timer] = [s for s in inv.steps if s.kind == "sleep"]
            latencies.append(world.bodies(nap.id)[1] - timer.value["until"] / 1000)
        print(
            f"\nwake-up latency (due -> body again), {len(latencies)} sleeps: "
            f"median {statistics.median(latencies) * 1000:.1f} ms, "
            f"min {min(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        )
    finally:
        world.close()
        main_client.close()
        private.close()
        server.kill()


if __name__ == "__main__":
    main()
