"""Profile the step path or the replay path against a private Redis.

    /work/venv/bin/python bench/profile_paths.py step    [--profiler cprofile|pyinstrument|none]
    /work/venv/bin/python bench/profile_paths.py replay  [--profiler ...]

``step`` runs ``--steps`` no-op ``ctx.run`` calls in one invocation (one EVALSHA each);
``replay`` journals ``--steps`` steps once and replays them ``--replays`` times. With
``--profiler none`` it only runs, for a sampling profiler outside the process::

    py-spy record --rate 2000 --format raw -o step.txt -- \\
        /work/venv/bin/python bench/profile_paths.py step --profiler none

cProfile is in the standard library; pyinstrument is optional (``pip install
pyinstrument``) and not needed by any benchmark.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

import _common as c
from celery import Celery

from celery_durable.codec import JsonCodec
from celery_durable.runtime import release_runtime, runtime_for

CODEC: JsonCodec[Any] = JsonCodec()


def noop() -> None:
    return None


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("path", choices=["step", "replay"])
    p.add_argument("--profiler", default="cprofile", choices=["cprofile", "pyinstrument", "none"])
    p.add_argument("--steps", type=int, help="default 20,000 for step, 10,000 for replay")
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--top", type=int, default=30, help="rows of the cProfile listing")
    args = p.parse_args()
    prefix = c.unique_prefix("profile")

    with c.redis_for(args, prefix) as url:
        app = Celery("bench-profile", set_as_current=False)
        app.conf.update(durable_redis_url=url, durable_key_prefix=prefix)
        store = runtime_for(app).store
        work: Callable[[], None]
        if args.path == "step":
            steps = args.steps or 20_000
            ctx = c.begin(store, f"{prefix}-warm", "bench.profile", CODEC)
            for _ in range(500):
                ctx.run("step", noop)

            def work() -> None:
                ctx = c.begin(store, f"{prefix}-steps", "bench.profile", CODEC)
                run = ctx.run
                for _ in range(steps):
                    run("step", noop)

            what = f"{steps:,} steps"
        else:
            steps = args.steps or 10_000
            task_id = f"{prefix}-replay"
            ctx = c.begin(store, task_id, "bench.profile", CODEC)
            for i in range(steps):
                ctx.run("step", lambda i=i: i)
            c.finish(ctx)

            def work() -> None:
                for _ in range(args.replays):
                    ctx = c.begin(store, task_id, "bench.profile", CODEC)
                    run = ctx.run
                    for _ in range(steps):
                        run("step", noop)
                    assert not ctx.is_replaying

            what = f"{args.replays} replays of {steps:,} steps"

        t0 = time.perf_counter()
        if args.profiler == "cprofile":
            profile = cProfile.Profile()
            profile.runcall(work)
            elapsed = time.perf_counter() - t0
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        elif args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
            work()
            profiler.stop()
            elapsed = time.perf_counter() - t0
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        else:
            work()
            elapsed = time.perf_counter() - t0
        print(f"{what} in {elapsed:.2f} s (under {args.profiler})")
        release_runtime(app)


if __name__ == "__main__":
    main()
