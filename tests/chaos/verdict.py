"""The chaos run's verdict: what ran compared with what may have run.

A step may run again only if an earlier run of it was in flight at a kill or during
a Redis restart; every invocation must finish with the result its order and seed
determine, its draws included.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult

from celery_durable import DurableRandom, get_invocation
from tests.chaos import harness
from tests.chaos.world import SLOTS, ChaosRun


def expected_result(order: str, seed: int) -> dict[str, Any]:
    """The result of a fault-free execution: step values, and the draws of the seed."""
    return {
        "order": order,
        "steps": [harness.step_value(order, i) for i in range(harness.STEPS)],
        "draws": [str(DurableRandom(seed, p).uint64()) for p in range(harness.STEPS + 1)],
    }


@dataclass
class Verdict:
    figures: dict[str, Any]
    lost: list[str]
    """Invocations a worker received and that did not complete: this library's losses."""
    lost_by_the_broker: list[str]
    """Invocations no worker ever received: see the module docstring of test_chaos."""
    wrong_results: list[str]
    twice: list[str]
    wrong_draws: list[str]
    never_ran: list[str]

    @property
    def problems(self) -> list[str]:
        return self.lost + self.wrong_results + self.twice + self.wrong_draws + self.never_ran


def verdict(run: ChaosRun, left: dict[str, tuple[str | None, str | None]]) -> Verdict:
    """Judge the run from the journals, the result backend and the evidence."""
    ids = list(run.orders)
    ev = run.ev
    pipe = run.evidence.pipeline(transaction=False)
    for task_id in ids:
        pipe.get(ev.bodies(task_id))
        pipe.lrange(ev.outcomes(task_id), 0, -1)
        for index in range(harness.STEPS):
            pipe.lrange(ev.log(task_id, index), 0, -1)
    replies = iter(pipe.execute())
    bodies: dict[str, int] = {}
    outcomes: dict[str, list[dict[str, Any]]] = {}
    logs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for task_id in ids:
        bodies[task_id] = int(next(replies) or 0)
        outcomes[task_id] = [json.loads(o) for o in next(replies)]
        for index in range(harness.STEPS):
            logs[(task_id, index)] = [json.loads(x) for x in next(replies)]
    pipe = run.evidence.pipeline(transaction=False)
    for task_id in ids:
        for execution in range(1, bodies[task_id] + 1):
            pipe.lrange(ev.draws(task_id, execution), 0, -1)
    replies = iter(pipe.execute())
    draws = {t: [next(replies) for _ in range(bodies[t])] for t in ids}

    killed = {
        (m["task"], m["index"], m["run"]): kill["t"] for kill in run.kills for m in kill["inflight"]
    }
    windows = [(r["killed"], r["ready"]) for r in run.restarts]

    lost, wrong, twice, wrong_draws, never_ran = [], [], [], [], []
    never_received: list[str] = []
    runs_hist: Counter[int] = Counter()
    repeated = {"kill": 0, "redis-restart": 0}
    # How the runs in a Redis restart window of steps that ran again ended.
    before_restart: Counter[str] = Counter()
    # Runs in flight at a kill whose step was journaled anyway (not run again).
    killed_but_kept = 0
    vanished = 0
    for task_id in ids:
        order = run.orders[task_id]
        inv = get_invocation(run.app, task_id)
        async_result = AsyncResult(task_id, app=run.app)
        state = async_result.state
        if inv is None or inv.status != "completed" or state != "SUCCESS":
            where = (
                f"{task_id}: journal {inv.status if inv else 'missing'}, backend {state}; "
                f"deliveries {outcomes[task_id]}; {run.whereabouts(task_id)}"
            )
            if inv is None and not outcomes[task_id] and not run.received(task_id):
                never_received.append(where)  # the broker's loss, before any worker had it
            else:
                lost.append(where)
            continue
        assert inv.seed is not None
        expected = expected_result(order, inv.seed)
        if inv.result != expected:
            wrong.append(f"{task_id}: journal result {inv.result} != expected {expected}")
        if async_result.result != expected:
            wrong.append(f"{task_id}: backend result {async_result.result} != {expected}")
        for n, seen in enumerate(draws[task_id], start=1):
            if seen != expected["draws"][: len(seen)]:
                wrong_draws.append(f"{task_id}: execution {n} drew {seen}, not {expected['draws']}")
        for index in range(harness.STEPS):
            records = logs[(task_id, index)]
            enters = {x["run"]: x for x in records if x["ev"] == "enter"}
            exits = {x["run"]: x for x in records if x["ev"] == "exit"}
            runs_hist[len(enters)] += 1
            if not enters:
                never_ran.append(f"{task_id} step {index}: journaled but its function never ran")
                continue
            covered = 0
            for number, enter in enters.items():
                why = _fault_of(task_id, index, number, enter, exits.get(number), killed, windows)
                if why is not None:
                    covered += 1
                    if len(enters) > 1:
                        repeated[why] += 1
                    if why == "redis-restart" and len(enters) > 1:
                        before_restart[exits[number]["outcome"]] += 1
                    if why == "kill" and len(enters) == 1:
                        killed_but_kept += 1
                elif number not in exits:
                    vanished += 1
            if len(enters) - covered > 1:
                detail = [
                    {**enters[n], "exit": exits.get(n), "killed": (task_id, index, n) in killed}
                    for n in sorted(enters)
                ]
                twice.append(
                    f"{task_id} step {index} ran {len(enters)} times, {covered} of them in a "
                    f"fault window: {json.dumps(detail)}"
                )

    deliveries = [o for t in ids for o in outcomes[t]]
    states = Counter(o["state"] for o in deliveries)
    whys = Counter(o.get("why", "") for o in deliveries if o["state"] == "RETRY")
    figures = {
        "seed": run.settings.seed,
        "seconds": run.settings.seconds,
        "chaos_seconds": round(run.timings.get("chaos", 0.0), 1),
        "drain_seconds": round(run.timings.get("drain", 0.0), 1),
        "workers": [f"{slot}:{pool}x{c}" for slot, pool, c in SLOTS],
        "invocations": len(ids),
        "steps_per_invocation": harness.STEPS,
        "kills": len(run.kills),
        "group_kills": sum(1 for k in run.kills if k["kind"] == "group"),
        "child_kills": sum(1 for k in run.kills if k["kind"] == "child"),
        "kills_inside_a_step": sum(1 for k in run.kills if k["inflight"]),
        "steps_in_flight_at_kills": sum(len(k["inflight"]) for k in run.kills),
        "steps_in_flight_at_worker_exits": sum(len(x["inflight"]) for x in run.unexpected_exits),
        "duplicate_deliveries": len(run.duplicates),
        "redis_restarts": len(run.restarts),
        "redis_downtime_seconds": [round(r["down"], 2) for r in run.restarts],
        "steps_in_flight_at_redis_kill": sum(len(r["inflight"]) for r in run.restarts),
        "unexpected_worker_exits": len(run.unexpected_exits),
        "unexpected_worker_exit_causes": dict(Counter(_cause(x) for x in run.unexpected_exits)),
        "send_errors": len(run.send_errors),
        "executions": sum(bodies.values()),
        "deliveries_ended": dict(states),
        "retries_by_reason": dict(whys),
        "step_runs": sum(n * c for n, c in runs_hist.items()),
        "steps_by_number_of_runs": {str(n): c for n, c in sorted(runs_hist.items())},
        "reruns_after_kill": repeated["kill"],
        "reruns_after_redis_restart": repeated["redis-restart"],
        "redis_window_runs_of_rerun_steps_by_outcome": dict(before_restart),
        "in_flight_at_a_kill_but_journaled_before_it": killed_but_kept,
        "runs_that_vanished_outside_faults": vanished,
        "messages_left": run.messages_left(),
        "lost_invocations": len(lost),
        # Not among them: the ones no worker ever received (no journal, no delivery), whose
        # message the broker lost before any code of this library saw it.
        "lost_before_any_worker_received_them": len(never_received),
        "steps_run_twice_outside_a_fault_window": len(twice),
        "wrong_results": len(wrong),
        "wrong_draws": len(wrong_draws),
        "steps_that_never_ran": len(never_ran),
        "unfinished_at_drain_deadline": len(left),
    }
    return Verdict(figures, lost, never_received, wrong, twice, wrong_draws, never_ran)


def _cause(exit: dict[str, Any]) -> str:
    """The error a worker that exited by itself logged, without its time stamp."""
    text = str(exit["cause"])
    return text.partition("] ")[2] or text


def _fault_of(
    task_id: str,
    index: int,
    number: int,
    enter: dict[str, Any],
    exit: dict[str, Any] | None,
    killed: dict[tuple[str, int, int], float],
    windows: list[tuple[float, float]],
) -> str | None:
    """Which fault this run of a step was in flight at, if any.

    A run is in flight from the start of the step's function until ``ctx.run`` returned
    or raised in the body (after the journal write). Killed: its process died while it
    was in flight (the marker the test read right after the kill, or right after its
    worker exited by itself and the rest of its group was killed). Redis restart: it was
    in flight at some moment between the kill of Redis and the moment it served again.
    """
    if (task_id, index, number) in killed:
        return "kill"
    if exit is not None:
        entered, left = float(enter["t"]), float(exit["t"])
        if any(entered <= ready and left >= down for down, ready in windows):
            return "redis-restart"
    return None
