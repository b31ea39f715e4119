"""Database work per message: msgstatus against the polling job, side by side in one run.

Commands are counted by the embedded server per client ``appName`` (serverStatus
``wireCommandsByApp``): both systems connect as SYSTEM_APP, the rig's client (which
writes the test traffic) gives none, so only the systems' own commands count. The server's CPU
is read from /proc over the same window, less what the writer's inserts cost it
(measured alone, in the same run), and reported in units of one plain
``find_one_and_update`` measured in the same run: machines here vary ~4x from day
to day, so only such ratios carry.

Regimes: a burst (``burst`` messages and their logs written at once, the system
running) and a trickle (``trickle`` messages one every ``gap`` s, each log right
after its message). Each ends when every message is emitted (or at ``cap``).

Each regime runs in ``rounds`` rounds, both systems in each, the first to go alternating from round to
round: a figure is the median of the rounds, and a ratio the median of each round's own ratio, since one
run of the embedded server on its own varies by a fifth or more.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.collection import Collection

from bench.floor import bench_floor, floor_lines
from bench.report import stamp
from bench.rig import SYSTEM_APP, Rig, System, comm_doc, message_doc, offer, percentiles
from msgstatus.harness import cpu_seconds
from watcher.recent import TRUST_AFTER

SECTION = "## Database work per message"

STEADY_SHARE = 12
"""The steady load is the plain-update rate divided by this."""


@dataclass(frozen=True)
class CostPlan:
    burst: int = 1_000
    trickle: int = 200
    gap: float = 0.05
    plain_updates: int = 2_000
    steady_seconds: float = 20.0
    cap: float = 180.0
    """Seconds a regime may take before it counts as not done."""
    rounds: int = 3
    """Rounds of each regime, both systems in each (a figure is the rounds' median)."""
    regimes: tuple[str, ...] = ("burst", "trickle")
    systems: tuple[str, ...] = ("msgstatus", "polling")
    settle: float = TRUST_AFTER + 1
    """Seconds a started system runs before the measurement: start-up work (indexes, the first sweep) is not
    the messages' cost, and the watcher is measured as it runs for days, its memory of seen logs trusted."""
    floor_rounds: int = 9
    floor_messages: int = 150
    """Rounds, and messages per round, of the sequences replayed one message at a time (``bench.floor``)."""


FULL_COST = CostPlan()

QUICK_COST = CostPlan(burst=40, trickle=10, plain_updates=200, steady_seconds=0, cap=30, rounds=1, regimes=("burst",),
                      systems=("msgstatus",), settle=0.5, floor_rounds=1, floor_messages=10)
"""Enough to see that the scenario runs (``--quick``); its figures mean little."""


def server_cpu(rig: Rig) -> float:
    return cpu_seconds(rig.servers[0].pid)


def commands(rig: Rig, app: str) -> Counter[str]:
    """Commands the server answered for clients named ``app`` so far."""
    status = rig.client.admin.command("serverStatus")
    return Counter(status.get("wireCommandsByApp", {}).get(app, {}))


def plain_updates(rig: Rig, count: int) -> dict[str, float]:
    """The server's CPU per plain find_one_and_update, and their rate, one client, one document."""
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(rig.mongo_url, appName="bench-plain") as client:
        collection: Collection[dict[str, Any]] = client.msgstatus.plain
        collection.insert_one({"_id": 1, "n": 0})
        for _ in range(50):  # warm: connection, code paths
            collection.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
        cpu, began = server_cpu(rig), time.perf_counter()
        for _ in range(count):
            collection.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
        wall, used = time.perf_counter() - began, server_cpu(rig) - cpu
        collection.drop()
    return {"cpu_s": used / count, "rate": count / wall}


def _write_burst(rig: Rig, count: int) -> None:
    mids = [ObjectId() for _ in range(count)]
    rig.db.support_messages.insert_many([message_doc(m) for m in mids])
    rig.db.communications.insert_many([comm_doc(m) for m in mids])


def _write_trickle(rig: Rig, count: int, gap: float) -> None:
    began = time.monotonic()
    for i in range(count):
        mid = ObjectId()
        rig.db.support_messages.insert_one(message_doc(mid))
        rig.db.communications.insert_one(comm_doc(mid))
        pause = began + (i + 1) * gap - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def writes_alone(rig: Rig, write: Callable[[], None]) -> float:
    """The server's CPU for the traffic alone, no system running (what a regime's figure is less)."""
    rig.reset()
    cpu = server_cpu(rig)
    write()
    return server_cpu(rig) - cpu


def run_regime(rig: Rig, name: str, count: int, write: Callable[[], None], writes_cpu: float,
               plan: CostPlan) -> dict[str, Any]:
    """One system through one regime: its commands and server CPU per message, and how long it took."""
    rig.reset()
    system = System(name, rig, 2, True)
    try:
        system.ready()
        time.sleep(plan.settle)
        before_cpu, before = server_cpu(rig), commands(rig, SYSTEM_APP)
        began = time.monotonic()
        write()
        deadline = began + plan.cap
        while len({e.message_id for e in rig.receiver.emits}) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        ended = time.monotonic()
        used, after = server_cpu(rig) - before_cpu, commands(rig, SYSTEM_APP)
    finally:
        system.stop()
    emitted = len({e.message_id for e in rig.receiver.emits})
    spent = after - before
    return {"emitted": emitted, "count": count, "seconds": ended - began,
            "commands": {k: v / count for k, v in spent.most_common() if v},
            "commands_per_message": sum(spent.values()) / count,
            "cpu_per_message_s": max(used - writes_cpu, 0.0) / count}


def bench_cost(rig: Rig, whole: Any, results: dict[str, Any]) -> None:
    """Commands and database CPU per message, burst and trickle, both systems; then a steady load."""
    plan: CostPlan = whole.cost
    plain = plain_updates(rig, plan.plain_updates)
    results["plain"] = plain
    print(f"plain updates: {plain}", flush=True)
    regimes = {
        "burst": (plan.burst, lambda: _write_burst(rig, plan.burst)),
        "trickle": (plan.trickle, lambda: _write_trickle(rig, plan.trickle, plan.gap)),
    }
    for regime in plan.regimes:
        count, write = regimes[regime]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in plan.systems}
        for number in range(plan.rounds):
            unit = plain_updates(rig, plan.plain_updates) if number else plain
            alone = writes_alone(rig, write)
            order = plan.systems if number % 2 == 0 else plan.systems[::-1]
            for name in order:
                got = run_regime(rig, name, count, write, alone, plan)
                got["cpu_units"] = got["cpu_per_message_s"] / unit["cpu_s"]
                got["rate_share"] = (got["emitted"] / got["seconds"]) / unit["rate"]
                rounds[name].append(got)
                print(f"cost {name} {regime} round {number + 1}: {got}", flush=True)
        for name, runs in rounds.items():
            results.setdefault("cost_rounds", {})[(name, regime)] = runs

    if plan.floor_rounds:
        rig.reset()
        results["floor"] = bench_floor(rig, plan.floor_rounds, plan.floor_messages, plain["cpu_s"])
        print(f"floor: {results['floor']}", flush=True)
    if not plan.steady_seconds:
        return
    rate = plain["rate"] / STEADY_SHARE
    rig.reset()
    system = System("msgstatus", rig, 2, True)
    try:
        system.ready()
        latencies, count = offer(rig, rate, plan.steady_seconds, 20)
    finally:
        system.stop()
    results["steady"] = {"rate": rate, "count": count, "emitted": len(latencies), **percentiles(latencies)}
    print(f"steady {rate:.1f}/s: {results['steady']}", flush=True)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One regime's figures for one system over its rounds: medians, the fewest emitted, the median run's mix."""
    middle = sorted(runs, key=lambda run: run["cpu_units"])[len(runs) // 2]
    return {**middle, "emitted": min(run["emitted"] for run in runs),
            **{key: statistics.median(run[key] for run in runs)
               for key in ("commands_per_message", "cpu_per_message_s", "cpu_units", "rate_share")}}


def cost_lines(results: dict[str, Any], plan: CostPlan) -> list[str]:
    """The results file's section on database work per message."""
    rounds, plain = results.get("cost_rounds"), results.get("plain")
    if not rounds or not plain:
        return []
    out = ["", SECTION, "",
           f"{stamp()}. Commands the systems sent (counted by the server per client), and the database "
           f"server's CPU less the test traffic's own writes, per message, in units of one plain "
           f"`find_one_and_update` measured before each round (the first: {plain['cpu_s'] * 1e3:.2f} ms of "
           f"server CPU, {plain['rate']:.0f} plain updates/s). Burst: "
           f"{plan.burst:,} messages and their logs written at once; trickle: {plan.trickle} messages one every "
           f"{plan.gap * 1000:.0f} ms, each log right after its message. 2 SimpleWorkers each. Each regime ran "
           f"{plan.rounds} round(s), both systems in each on fresh servers, the first to go alternating: figures "
           "are the rounds' medians (emitted: the fewest), ratios the median of each round's own ratio. "
           "Rerun: `make bench` (or `python -m bench.compare --cost-only`).", "",
           "| regime | system | emitted | commands / message | by command (median round) | server CPU / message "
           "(plain updates): median, rounds | drain rate / plain-update rate |", "|---|---|---:|---:|---|---|---:|"]
    for (name, regime), runs in rounds.items():
        r = median_run(runs)
        names = ", ".join(f"{k} {v:.2f}" for k, v in r["commands"].items())
        each = ", ".join(f"{run['cpu_units']:.2f}" for run in runs)
        out.append(f"| {regime} | {name} | {r['emitted']}/{r['count']} | {r['commands_per_message']:.2f} | "
                   f"{names} | {r['cpu_units']:.2f} ({each}) | {r['rate_share']:.2f} |")
    for regime in ("burst", "trickle"):
        ours, theirs = rounds.get(("msgstatus", regime)), rounds.get(("polling", regime))
        if ours and theirs:
            commands, cpu = _ratios(ours, theirs, "commands_per_message"), _ratios(ours, theirs, "cpu_units")
            out.append(f"\n{regime.capitalize()}: msgstatus sends **{_median(commands)}** the polling job's commands "
                       f"per message and costs the database **{_median(cpu)}** its CPU per message (rounds: "
                       f"{', '.join(f'{r:.2f}x' for r in cpu)}).")
    out += floor_lines(results.get("floor"))
    steady = results.get("steady")
    if steady:
        out.append(f"\nSteady load at 1/{STEADY_SHARE} of the plain-update rate ({steady['rate']:.1f} messages/s for "
                   f"{plan.steady_seconds:.0f} s), msgstatus: {steady['emitted']}/{steady['count']} emitted, insert to "
                   f"emit p50 {steady['p50']:.0f} ms, p99 **{steady['p99']:.0f} ms**, max {steady['max']:.0f} ms.")
    return out


def _ratios(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[float]:
    """Each round's ratio of ours to theirs (rounds where theirs is zero left out)."""
    return [a[key] / b[key] for a, b in zip(ours, theirs, strict=True) if b[key]]


def _median(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"
