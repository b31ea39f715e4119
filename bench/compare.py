"""msgstatus against the seed's polling job (bench/baseline_polling.py), side by side, in one run.

Run: ``make bench`` (``python -m bench.compare``), or ``--quick`` for a small version in under a
minute. Writes bench/results.md and bench/latency.png (the paths can be changed with --out).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from bson import ObjectId

from bench.cost import FULL_COST, QUICK_COST, CostPlan, bench_cost, cost_lines
from bench.cost import SECTION as COST_SECTION
from bench.report import IDLE_SECTION, idle_lines, merge_into, plot, plot_throughput, report, stamp
from bench.rig import (
    HERE,
    Rig,
    System,
    comm_doc,
    fresh_rig,
    message_doc,
    offer,
    percentiles,
    run_system,
    wait_quiet,
)
from core.defaults import LOG_HORIZON
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import sweep
from msgstatus.harness import cpu_seconds, rss_kib

LATENCY_RUNS = (("msgstatus", True), ("msgstatus", False), ("polling", True))
"""(system, SimpleWorker?) pairs whose latency is measured. SimpleWorker is msgstatus's default, and the
polling job's too: Bull ran the seed's jobs in the Node process, without a fork per job."""


@dataclass
class Plan:
    latency_seconds: float
    rates: tuple[int, ...]
    max_rates: tuple[int, ...]
    max_rate_seconds: float
    sustained_rate: int
    sustained_seconds: float
    drain_counts: tuple[int, ...]
    drain_cap: float
    drain_workers: tuple[int, ...]
    watcher_events: int
    watcher_seconds: float
    idle_stored: int
    idle_seconds: float
    sweep_sizes: tuple[int, ...]
    latency_runs: tuple[tuple[str, bool], ...] = LATENCY_RUNS
    """Which (system, SimpleWorker?) pairs the latency scenario measures."""
    idle_settle: float = 6.0
    """Seconds of start-up work (index creation, first sweep) let pass before the idle measurement."""
    cost: CostPlan = FULL_COST
    """The database work per message scenario (``bench.cost``)."""


FULL = Plan(20, (10,), (25, 50, 100, 150, 200, 300, 400), 10, 150, 60, (150, 10_000), 60, (1, 2, 4), 500, 20,
            50_000, 60, (1_000, 10_000, 50_000))
QUICK = Plan(3, (10,), (), 0, 0, 0, (150,), 10, (2,), 0, 0, 1_000, 1, (1_000,),
             latency_runs=(("msgstatus", True), ("polling", True)), idle_settle=1, cost=QUICK_COST)

SYSTEMS = ("msgstatus", "polling")


def _offer(rig: Rig, rate: float, seconds: float, settle: float, system: System) -> tuple[list[float], int]:
    return offer(rig, rate, seconds, settle)


def bench_latency(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    for name, simple in plan.latency_runs:
        label = name if simple else f"{name} (--fork)"
        for rate in plan.rates:
            seconds = plan.latency_seconds if rate <= 10 else max(2.0, plan.latency_seconds / 3)
            lat, count = run_system(rig, name, 2, simple, partial(_offer, rig, rate, seconds, 20))
            results.setdefault("latency", {})[(label, rate)] = {"count": count, "emitted": len(lat), **percentiles(lat)}
            results.setdefault("samples", {})[(label, rate)] = lat
            print(f"latency {label} {rate}/s: {results['latency'][(label, rate)]}", flush=True)


def bench_max_rate(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    for name in SYSTEMS:
        best = 0
        for rate in plan.max_rates:
            lat, count = run_system(rig, name, 2, True, partial(_offer, rig, rate, plan.max_rate_seconds, 15))
            kept_up = len(lat) == count and max(lat) <= 10_000
            print(f"max-rate {name} {rate}/s: emitted {len(lat)}/{count}, max {max(lat or [0]):.0f} ms", flush=True)
            results.setdefault("rate_runs", {})[(name, rate)] = {"count": count, "emitted": len(lat),
                                                                 **percentiles(lat)}
            if not kept_up:
                break
            best = rate
        results.setdefault("max_rate", {})[name] = best


def bench_sustained(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    """``sustained_rate``/s for ``sustained_seconds`` into msgstatus with 2 workers: insert to emit."""
    started = time.monotonic()
    lat, count = run_system(rig, "msgstatus", 2, True,
                            partial(_offer, rig, plan.sustained_rate, plan.sustained_seconds, 30))
    results["sustained"] = {"count": count, "emitted": len(lat), "rate": plan.sustained_rate,
                            "seconds": plan.sustained_seconds, "wall": time.monotonic() - started, **percentiles(lat)}
    print(f"sustained {plan.sustained_rate}/s: {results['sustained']}", flush=True)


def bench_watcher_cpu(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    """The watcher's CPU per change event, ``watcher_events``/s offered (half messages, half logs)."""

    def measure(system: System) -> dict[str, float]:
        watcher = system.processes[0].pid
        before_cpu, before = cpu_seconds(watcher), _events(rig)
        began = time.monotonic()
        _, pairs = offer(rig, plan.watcher_events / 2, plan.watcher_seconds, 5)
        wrote = time.monotonic() - began
        events = _events(rig) - before
        cpu = cpu_seconds(watcher) - before_cpu
        return {"events": events, "pairs": pairs, "cpu_s": cpu, "ms_per_event": cpu * 1000 / max(events, 1),
                "offered_per_s": plan.watcher_events, "achieved_per_s": 2 * pairs / wrote}

    results["watcher_cpu"] = run_system(rig, "msgstatus", 2, True, measure)
    print(f"watcher cpu: {results['watcher_cpu']}", flush=True)


def _events(rig: Rig) -> int:
    from core import metrics

    return int(sum(metrics.value(rig.redis, metrics.CHANGE_EVENTS, stream=s) for s in ("messages", "communications")))


def bench_drain(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    del rig  # each run gets servers of its own
    for count in plan.drain_counts:
        for workers in plan.drain_workers:
            for name in SYSTEMS:  # side by side: both systems at each size and worker count
                # Fresh servers for each run: the polling job can leave the embedded server busy for minutes.
                with fresh_rig() as own:
                    _drain_once(own, plan, results, name, count, workers)


def _drain_once(rig: Rig, plan: Plan, results: dict[str, Any], name: str, count: int, workers: int) -> None:
    """One drain: the backlog written first, then the system started, emits counted until done or the cap."""
    mids = [ObjectId() for _ in range(count)]
    for start in range(0, len(mids), 5_000):
        part = mids[start:start + 5_000]
        rig.db.support_messages.insert_many([message_doc(m) for m in part])
        rig.db.communications.insert_many([comm_doc(m) for m in part])
    started = time.monotonic()
    system = System(name, rig, workers, True)
    peaks = {"watcher": 0, "worker": 0}
    try:
        deadline = started + plan.drain_cap
        while _emitted(rig) < count and time.monotonic() < deadline:
            if name == "msgstatus":
                peaks["watcher"] = max(peaks["watcher"], rss_kib(system.processes[0].pid))
                peaks["worker"] = max(peaks["worker"], rss_kib(system.processes[2].pid))
            time.sleep(0.05 if count < 1_000 else 0.25)
        elapsed = time.monotonic() - started
    finally:
        system.stop()
    done, twice = _emitted(rig), len(rig.receiver.emits) - _emitted(rig)
    times = sorted(e.received for e in rig.receiver.emits)
    # Once draining: from the first emit to the last, what start-up (a second or so of imports) leaves out.
    steady = (done - 1) / (times[-1] - times[0]) if done > 1 and times[-1] > times[0] else float("nan")
    key = (name, count, workers)
    results.setdefault("drain", {})[key] = {"emitted": done, "seconds": elapsed, "rate": done / elapsed,
                                            "steady": steady, "emitted_twice": twice,
                                            **({"peaks": peaks} if name == "msgstatus" else {})}
    print(f"drain {key}: {done} in {elapsed:.1f}s = {done / elapsed:.1f}/s, {steady:.1f}/s once draining, "
          f"{twice} emitted again", flush=True)


def _emitted(rig: Rig) -> int:
    """Messages emitted at least once (an emit made again is not a message more)."""
    return len({e.message_id for e in rig.receiver.emits})


def bench_idle(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    for name in SYSTEMS:
        rig.reset()
        for start in range(0, plan.idle_stored, 5_000):
            rig.db.support_messages.insert_many(
                [message_doc(ObjectId(), decided=True) for _ in range(min(5_000, plan.idle_stored - start))]
            )
        system = System(name, rig, 2, True)
        try:
            system.ready()
            wait_quiet(rig.servers[0].pid)
            time.sleep(plan.idle_settle)
            mongo_pid, redis_pid = rig.servers[0].pid, rig.servers[1].pid
            before = (cpu_seconds(mongo_pid), cpu_seconds(redis_pid), system.cpu(), rig.commands())
            time.sleep(plan.idle_seconds)
            after = (cpu_seconds(mongo_pid), cpu_seconds(redis_pid), system.cpu(), rig.commands())
        finally:
            system.stop()
        minutes = plan.idle_seconds / 60
        results.setdefault("idle", {})[name] = {
            "db_cpu": after[0] - before[0], "redis_cpu": after[1] - before[1], "own_cpu": after[2] - before[2],
            # Less one: our own serverStatus call.
            "commands_per_minute": (after[3] - before[3] - 1) / minutes,
            "seconds": plan.idle_seconds,
        }
        print(f"idle {name}: {results['idle'][name]}", flush=True)


def bench_sweep_cost(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    from rq import Queue

    from bench.baseline_polling import poll_once
    from jobs.messages import ensure_indexes

    for size in plan.sweep_sizes:
        rig.reset()
        for start in range(0, size, 5_000):
            rig.db.support_messages.insert_many(
                [message_doc(ObjectId(), decided=True) for _ in range(min(5_000, size - start))]
            )
        pending = [ObjectId() for _ in range(10)]
        rig.db.support_messages.insert_many([message_doc(m) for m in pending])
        rig.db.communications.insert_many([comm_doc(m) for m in pending])
        started = time.perf_counter()
        polled = poll_once(rig.db, Queue("bench-baseline", connection=rig.redis))
        baseline = time.perf_counter() - started
        rig.db.support_messages.update_many({}, {"$unset": {"status_queue_in_progress": ""}})
        ensure_indexes(rig.db)
        started = time.perf_counter()
        result = sweep(rig.db, Enqueuer(status_queue(rig.redis)), 500, LOG_HORIZON)
        ours = time.perf_counter() - started
        results.setdefault("sweep", {})[size] = {
            "polling_ms": baseline * 1000, "polling_found": polled, "polling_examined": size + 10,
            "msgstatus_ms": ours * 1000, "msgstatus_examined": result.examined, "msgstatus_enqueued": result.enqueued,
        }
        print(f"sweep {size}: {results['sweep'][size]}", flush=True)


def _planned(plan: Plan, scenario: Callable[..., None]) -> bool:
    """Whether the plan gives a scenario anything to measure (each one starts servers of its own)."""
    return {bench_max_rate: bool(plan.max_rates), bench_sustained: bool(plan.sustained_rate),
            bench_watcher_cpu: bool(plan.watcher_events)}.get(scenario, True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small version, under a minute")
    parser.add_argument("--out", type=Path, default=HERE, help="directory for results.md and latency.png")
    parser.add_argument("--drain-only", type=int, nargs="*", metavar="BACKLOG",
                        help="only the drain scenario, for these backlog sizes")
    parser.add_argument("--cost-only", action="store_true", help="only the database work per message scenario")
    parser.add_argument("--idle-only", action="store_true", help="only the idle scenario")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.drain_only:
        plan = replace(plan, drain_counts=tuple(args.drain_only))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    scenarios = [bench_cost, bench_latency, bench_max_rate, bench_sustained, bench_watcher_cpu, bench_idle,
                 bench_sweep_cost, bench_drain]
    if args.drain_only:
        scenarios = [bench_drain]
    if args.cost_only:
        scenarios = [bench_cost]
    if args.idle_only:
        scenarios = [bench_idle]
    for scenario in filter(partial(_planned, plan), scenarios):
        # Fresh servers for each scenario: one that a system left busy for minutes cannot slow the next.
        rig = Rig()
        try:
            scenario(rig, plan, results)
        except Exception as error:  # one scenario's failure must not lose the others' results
            results.setdefault("errors", []).append(f"{scenario.__name__}: {type(error).__name__}: {error}")
            print(f"{scenario.__name__} did not complete: {error}", flush=True)
        finally:
            rig.close()
    if args.cost_only or args.idle_only:  # the other sections of the results file stay as their run left them
        if args.idle_only:
            section, lines = IDLE_SECTION, idle_lines(results, plan)
            if lines:
                lines = [*lines[:3], f"{stamp()}, this section alone (`--idle-only`).", "", *lines[3:]]
        else:
            section, lines = COST_SECTION, cost_lines(results, plan.cost)  # which gives its own run's stamp
        if lines:
            merge_into(args.out / "results.md", section, lines)
        print("\n".join(lines))
        return
    png, throughput = args.out / "latency.png", args.out / "throughput.png"
    text = report(results, plan, png if plot(results, png) else None, args.quick,
                  throughput if plot_throughput(results, throughput) else None)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
