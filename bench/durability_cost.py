"""Durability cost: one ``ctx.run`` of a no-op at each durability level, against PING.

A private primary and a replica of it (``redis-server`` on free ports, on this machine,
over loopback; their data in a temp dir) serve every level:

- ``durable_wait_replicas`` 0 or 1 (``WAIT 1 <timeout>`` pipelined after the step's
  write, in the same round trip);
- the primary's own persistence, set with ``CONFIG SET`` between batches:
  ``appendonly no``, or ``appendonly yes`` with ``appendfsync everysec`` or ``always``
  (with ``always`` Redis writes and fsyncs the AOF before it answers);
- ``durable_wait_aof`` (``WAITAOF 1 0 <timeout>``) when the server has WAITAOF (Redis
  7.2 and later). On an older Redis the store refuses it with a ConfigurationError:
  the script says so and measures ``appendfsync always`` as the server-side way to have
  a step on the primary's disk before it counts.

The levels run in alternating rounds, so that a noisy machine slows them alike. In a
batch each iteration times a PING and then a ``ctx.run`` on the same client (as
``step_overhead.py`` does); the figure of a batch is the median of each, their ratio is
the batch's, and the table gives the median over rounds. A level that slows the server
(``appendfsync always``) slows its PINGs too, so its steps are also given against the
median PING of the default level's batches.

    .venv/bin/python bench/durability_cost.py [--steps 1000] [--rounds 5]
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
import redis
from celery import Celery

from celery_durable import ConfigurationError
from celery_durable.codec import JsonCodec
from celery_durable.runtime import release_runtime, runtime_for

CODEC: JsonCodec[Any] = JsonCodec()


@dataclass(frozen=True)
class Level:
    """One durability level: what the client waits for, and the primary's persistence."""

    name: str
    wait_replicas: int
    wait_aof: bool
    appendonly: str
    appendfsync: str

    def server(self) -> str:
        if self.appendonly == "no":
            return "appendonly no"
        return f"appendonly yes, appendfsync {self.appendfsync}"

    def client(self) -> str:
        said = [f"durable_wait_replicas={self.wait_replicas}"] if self.wait_replicas else []
        said += ["durable_wait_aof=True"] if self.wait_aof else []
        return ", ".join(said) or "default"


LEVELS = [
    Level("primary memory (default)", 0, False, "no", "everysec"),
    Level("primary AOF, fsync every second", 0, False, "yes", "everysec"),
    Level("primary AOF, fsync always", 0, False, "yes", "always"),
    Level("replica memory (WAIT 1)", 1, False, "no", "everysec"),
    Level("WAIT 1 + primary AOF every second", 1, False, "yes", "everysec"),
    Level("WAIT 1 + primary AOF always", 1, False, "yes", "always"),
]
WAITAOF_LEVELS = [
    Level("primary AOF on disk (WAITAOF 1 0)", 0, True, "yes", "everysec"),
    Level("WAIT 1 + WAITAOF 1 0", 1, True, "yes", "everysec"),
]


def noop() -> None:
    return None


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[str, redis.Redis, Path]]:
    """A primary and a replica in sync with it; yield the primary's URL, a client of it,
    and its data dir."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("this benchmark needs redis-server on PATH")
    root = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[redis.Redis] = []

    def start(name: str, *extra: str) -> redis.Redis:
        port = c.free_port()
        data = root / name
        data.mkdir()
        log = str(data / "redis.log")
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--repl-diskless-sync-delay", "0", "--logfile", log]  # fmt: skip
        processes.append(
            subprocess.Popen(
                [server, *options, "--port", str(port), "--dir", str(data), *extra],
                stdout=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(port=port, decode_responses=True)
        clients.append(client)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    try:
        primary = start("primary")
        port = primary.connection_pool.connection_kwargs["port"]
        replica = start("replica", "--replicaof", "127.0.0.1", str(port))
        deadline = time.monotonic() + 30
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", primary, root / "primary"
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def set_persistence(primary: redis.Redis, level: Level) -> None:
    if level.appendonly == "yes":
        primary.config_set("appendfsync", level.appendfsync)
        if primary.config_get("appendonly")["appendonly"] != "yes":
            primary.config_set("appendonly", "yes")
            # Turning the AOF on rewrites it in the background first.
            while primary.info("persistence")["aof_rewrite_in_progress"]:
                time.sleep(0.05)
    else:
        primary.config_set("appendonly", "no")


def batch(store: Any, prefix: str, label: str, steps: int) -> tuple[float, float]:
    """Time ``steps`` PINGs and ``ctx.run`` no-ops, interleaved; return their medians (s)."""
    ctx = c.begin(store, f"{prefix}-{label}-{time.monotonic_ns()}", "bench.durability", CODEC)
    ping = store.client.ping
    clock = time.perf_counter
    pings, runs = [], []
    for _ in range(steps):
        t0 = clock()
        ping()
        t1 = clock()
        ctx.run("step", noop)
        t2 = clock()
        pings.append(t1 - t0)
        runs.append(t2 - t1)
    c.finish(ctx)
    return c.median(pings), c.median(runs)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="steps per level per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all the levels")
    args = p.parse_args()
    prefix = c.unique_prefix("durability")

    with primary_and_replica() as (url, primary, data_dir):
        info = c.machine(url)
        c.print_machine(info)
        version = primary.info("server")["redis_version"]
        apps: dict[tuple[int, bool], Celery] = {}

        def store_for(level: Level) -> Any:
            key = (level.wait_replicas, level.wait_aof)
            if key not in apps:
                app = Celery(f"bench-durability-{len(apps)}", set_as_current=False)
                app.conf.update(
                    durable_redis_url=url,
                    durable_key_prefix=prefix,
                    durable_wait_replicas=level.wait_replicas,
                    durable_wait_aof=level.wait_aof,
                    durable_wait_timeout=5.0,
                )
                apps[key] = app
            return runtime_for(apps[key]).store

        levels = list(LEVELS)
        waitaof_note = ""
        try:
            set_persistence(primary, WAITAOF_LEVELS[0])
            batch(store_for(WAITAOF_LEVELS[0]), prefix, "probe", 1)
            levels += WAITAOF_LEVELS
        except ConfigurationError as exc:
            waitaof_note = (
                f"durable_wait_aof is not measured: Redis {version} has no WAITAOF (Redis "
                f"7.2 and later); the store refuses it: {exc}"
            )
            print(f"# {waitaof_note}")

        for level in levels:  # warm up: connections, scripts, the AOF files
            set_persistence(primary, level)
            batch(store_for(level), prefix, "warmup", 200)

        rounds: dict[str, list[tuple[float, float]]] = {level.name: [] for level in levels}
        for number in range(args.rounds):
            for level in levels if number % 2 == 0 else reversed(levels):
                set_persistence(primary, level)
                gc.collect()
                rounds[level.name].append(batch(store_for(level), prefix, "run", args.steps))
            print(f"# round {number + 1} of {args.rounds} done")
        for app in apps.values():
            release_runtime(app)

    # A level that slows the server (fsync always) slows its PINGs too: its steps are
    # also given against the PINGs of the default level (its batches in every round).
    base_ping = c.median([ping for ping, _ in rounds[levels[0].name]])
    rows, figures = [], []
    for level in levels:
        pings = [ping for ping, _ in rounds[level.name]]
        steps = [step for _, step in rounds[level.name]]
        ratios = [step / ping for ping, step in rounds[level.name]]
        figure = {
            "level": level.name,
            "client": level.client(),
            "server": level.server(),
            "ping_us": c.median(pings) * 1e6,
            "step_us": c.median(steps) * 1e6,
            "ratio": c.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
            "ratio_to_default_ping": c.median(steps) / base_ping,
        }
        figures.append(figure)
        rows.append(
            [
                level.name,
                level.client(),
                level.server(),
                f"{figure['step_us']:.0f}",
                f"{figure['ping_us']:.0f}",
                f"{figure['ratio']:.2f}",
                f"{min(ratios):.2f}-{max(ratios):.2f}",
                f"{figure['ratio_to_default_ping']:.2f}",
            ]
        )
    print()
    print(
        f"Durability cost: ctx.run no-op per level, {args.steps} steps per level per round, "
        f"{args.rounds} rounds; Redis {version}, primary and replica on this machine (loopback); "
        f"the AOF on this machine's disk ({data_dir.parent}, removed since)"
    )
    headers = ["level", "client setting", "primary's persistence", "step us", "PING us",
               "x PING", "x PING range", "x default's PING"]  # fmt: skip
    print(c.table(headers, rows))
    if waitaof_note:
        print(waitaof_note)
    c.write_json(
        args.json,
        {
            "machine": info,
            "redis_version": version,
            "steps": args.steps,
            "rounds": args.rounds,
            "levels": figures,
            "per_round": rounds,
            "waitaof": waitaof_note or "measured",
        },
    )


if __name__ == "__main__":
    main()
