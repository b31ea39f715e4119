"""msgstatus against the seed's polling job (bench/baseline_polling.py), side by side, in one run.

Run: ``make bench`` (``python -m bench.compare``), or ``--quick`` for a small version in under a
minute. Writes bench/results.md and bench/latency.png (the paths can be changed with --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import redis
from bson import ObjectId

from embedded.processes import free_port, msgstatus_argv, stop, wait_for_port
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import sweep
from msgstatus.harness import cpu_seconds, rss_kib
from msgstatus.receiver import Emit, SocketReceiver

SECRET = "bench-secret-that-is-at-least-32-bytes"
HERE = Path(__file__).parent


@dataclass
class Rig:
    """The servers and the socket receiver both systems share."""

    mongo_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.servers = [
            subprocess.Popen(msgstatus_argv("mongo", "--port", str(self.mongo_port)), stderr=subprocess.DEVNULL),
            subprocess.Popen(msgstatus_argv("redis", "--port", str(self.redis_port)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        wait_for_port("127.0.0.1", self.mongo_port, 30, self.servers[0])
        wait_for_port("127.0.0.1", self.redis_port, 30, self.servers[1])
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/msgstatus?directConnection=true"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        # Patient: the polling baseline can keep the single-threaded server busy for a long time.
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.mongo_url, serverSelectionTimeoutMS=180_000, socketTimeoutMS=600_000
        )
        self.db = self.client.msgstatus
        self.redis = redis.Redis(port=self.redis_port)
        self.receiver = SocketReceiver(SECRET).start()

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "MONGO_DB_URL": self.mongo_url, "REDIS_URL": self.redis_url,
                "APP_SECRET": SECRET, "CONVERSATION_SOCKET": self.receiver.url, "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(HERE.parent)}

    def reset(self) -> None:
        self.client.drop_database("msgstatus")
        self.redis.flushall()
        self.receiver.emits.clear()
        self.receiver.listeners.clear()

    def commands(self) -> int:
        return int(self.client.admin.command("serverStatus")["wireCommands"])

    def close(self) -> None:
        self.receiver.stop()
        self.client.close()
        self.redis.close()
        for server in self.servers:
            stop(server)


class System:
    """One of the two systems' processes, started against the rig."""

    def __init__(self, name: str, rig: Rig, workers: int, simple: bool) -> None:
        self.name, self.rig = name, rig
        extra = ["--simple" if simple else "--fork"]
        if name == "msgstatus":
            argvs = [msgstatus_argv("watch"), msgstatus_argv("schedule")]
            argvs += [msgstatus_argv("work", *extra) for _ in range(workers)]
        else:
            base = [sys.executable, "-m", "bench.baseline_polling"]
            argvs = [[*base, "poll"]] + [[*base, "work", *extra] for _ in range(workers)]
        self.processes = [subprocess.Popen(a, env=rig.env(), stderr=subprocess.DEVNULL) for a in argvs]

    def ready(self) -> None:
        """msgstatus: the watcher holds the lock and both streams saved a token."""
        if self.name != "msgstatus":
            time.sleep(1)
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            streams = ("messages", "communications")
            if all(self.rig.redis.hget(f"msgstatus:watcher:stream:{s}", "token") for s in streams):
                return
            time.sleep(0.1)
        raise TimeoutError("the watcher never became active")

    def cpu(self) -> float:
        """CPU seconds of these processes and their reaped children (forked work horses)."""
        total = 0.0
        for process in self.processes:
            with open(f"/proc/{process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def message_doc(mid: ObjectId, decided: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": mid, "sender_type": "conversation", "sender_id": ObjectId(), "source": "sms",
                           "created": datetime.now(UTC), "metadata": {}}
    if decided:
        doc["delivered"] = True
    return doc


def comm_doc(mid: ObjectId) -> dict[str, Any]:
    return {"conv_message_id": mid, "account_id": ObjectId(), "success": True, "provider": "twilio"}


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def offer(rig: Rig, rate: float, seconds: float, settle: float) -> tuple[list[float], int]:
    """Write pairs at ``rate``/s for ``seconds``; latencies (ms) comm insert to emit, and pairs written."""
    inserted: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def on_emit(emit: Emit) -> None:
        with lock:
            started = inserted.get(emit.message_id)
            if started is not None:
                latencies.append((emit.received - started) * 1000)

    rig.receiver.listeners.append(on_emit)
    count = max(1, int(rate * seconds))
    began = time.monotonic()
    for i in range(count):
        mid = ObjectId()
        rig.db.support_messages.insert_one(message_doc(mid))
        with lock:
            inserted[str(mid)] = time.time()
        rig.db.communications.insert_one(comm_doc(mid))
        with lock:
            inserted[str(mid)] = time.time()
        pause = began + (i + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    deadline = time.monotonic() + settle
    while len(latencies) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return latencies, count


@contextmanager
def fresh_rig() -> Iterator[Rig]:
    rig = Rig()
    try:
        yield rig
    finally:
        rig.close()


def run_system(rig: Rig, name: str, workers: int, simple: bool, body: Callable[[System], Any]) -> Any:
    rig.reset()
    system = System(name, rig, workers, simple)
    try:
        system.ready()
        return body(system)
    finally:
        system.stop()


@dataclass
class Plan:
    latency_seconds: float
    rates: tuple[int, ...]
    max_rates: tuple[int, ...]
    max_rate_seconds: float
    drain_count: int
    drain_cap: float
    drain_workers: tuple[int, ...]
    drain_kinds: tuple[bool, ...]
    idle_stored: int
    idle_seconds: float
    sweep_sizes: tuple[int, ...]


FULL = Plan(20, (10, 100), (25, 50), 10, 10_000, 45, (1, 2, 4), (False, True), 50_000, 60,
            (1_000, 10_000, 50_000))
QUICK = Plan(3, (10,), (), 0, 150, 10, (2,), (True,), 1_000, 3, (1_000,))

SYSTEMS = ("msgstatus", "polling")


LATENCY_RUNS = (("msgstatus", True), ("msgstatus", False), ("polling", True))
"""(system, SimpleWorker?) pairs whose latency is measured. SimpleWorker is msgstatus's default, and the
polling job's too: Bull ran the seed's jobs in the Node process, without a fork per job."""


def bench_latency(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    for name, simple in LATENCY_RUNS:
        label = name if simple else f"{name} (--fork)"
        for rate in plan.rates:
            seconds = plan.latency_seconds if rate <= 10 else max(2.0, plan.latency_seconds / 3)
            lat, count = run_system(rig, name, 2, simple, lambda s, r=rate, sec=seconds: offer(rig, r, sec, 20))
            results.setdefault("latency", {})[(label, rate)] = {"count": count, "emitted": len(lat), **percentiles(lat)}
            results.setdefault("samples", {})[(label, rate)] = lat
            print(f"latency {label} {rate}/s: {results['latency'][(label, rate)]}", flush=True)


def bench_max_rate(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    if not plan.max_rates:
        return
    for name in SYSTEMS:
        best = 0
        for rate in plan.max_rates:
            lat, count = run_system(rig, name, 2, True, lambda s, r=rate: offer(rig, r, plan.max_rate_seconds, 15))
            kept_up = len(lat) == count and max(lat) <= 10_000
            print(f"max-rate {name} {rate}/s: emitted {len(lat)}/{count}, max {max(lat or [0]):.0f} ms", flush=True)
            if not kept_up:
                break
            best = rate
        results.setdefault("max_rate", {})[name] = best


def bench_drain(rig: Rig, plan: Plan, results: dict[str, Any]) -> None:
    del rig  # each run gets servers of its own
    for name in SYSTEMS:
        # The polling job's first poll over the backlog is what limits it, whatever its workers' kind.
        kinds = plan.drain_kinds if name == "msgstatus" else (True,)
        for workers in plan.drain_workers:
            for simple in kinds:
                # Fresh servers for each run: the polling job can leave the embedded server busy for minutes.
                with fresh_rig() as own:
                    _drain_once(own, plan, results, name, workers, simple)


def _drain_once(rig: Rig, plan: Plan, results: dict[str, Any], name: str, workers: int, simple: bool) -> None:
    """One drain: the backlog written first, then the system started, emits counted until done or the cap."""
    mids = [ObjectId() for _ in range(plan.drain_count)]
    for start in range(0, len(mids), 5_000):
        part = mids[start:start + 5_000]
        rig.db.support_messages.insert_many([message_doc(m) for m in part])
        rig.db.communications.insert_many([comm_doc(m) for m in part])
    started = time.monotonic()
    system = System(name, rig, workers, simple)
    peaks = {"watcher": 0, "worker": 0}
    watcher_rss: list[tuple[int, int]] = []
    try:
        deadline = started + plan.drain_cap
        while len(rig.receiver.emits) < plan.drain_count and time.monotonic() < deadline:
            if name == "msgstatus":
                watcher = rss_kib(system.processes[0].pid)
                peaks["watcher"] = max(peaks["watcher"], watcher)
                peaks["worker"] = max(peaks["worker"], rss_kib(system.processes[2].pid))
                watcher_rss.append((len(rig.receiver.emits), watcher))
            time.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        system.stop()
    done = len(rig.receiver.emits)
    key = (name, workers, "SimpleWorker" if simple else "forking")
    results.setdefault("drain", {})[key] = {"emitted": done, "seconds": elapsed, "rate": done / elapsed,
                                            **({"peaks": peaks, "watcher_rss": watcher_rss}
                                               if name == "msgstatus" else {})}
    print(f"drain {key}: {done} in {elapsed:.1f}s = {done / elapsed:.1f}/s", flush=True)


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
            time.sleep(6)  # let start-up work (index creation, first sweep) pass
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
        result = sweep(rig.db, Enqueuer(status_queue(rig.redis)), 500)
        ours = time.perf_counter() - started
        results.setdefault("sweep", {})[size] = {
            "polling_ms": baseline * 1000, "polling_found": polled, "polling_examined": size + 10,
            "msgstatus_ms": ours * 1000, "msgstatus_examined": result.examined, "msgstatus_enqueued": result.enqueued,
        }
        print(f"sweep {size}: {results['sweep'][size]}", flush=True)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = sorted({rate for _, rate in results["samples"]})
    fig, axes = plt.subplots(1, len(rates), figsize=(5.5 * len(rates), 4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for name in sorted({label for label, _ in results["samples"]}):
            values = sorted(results["samples"].get((name, rate), []))
            if values:
                ax.plot(values, [i / len(values) for i in range(len(values))], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("communication insert to emit (ms, log scale)")
        ax.set_ylabel("fraction of messages")
        ax.set_title(f"{rate} messages/s offered, 2 workers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def report(results: dict[str, Any], plan: Plan, png: Path | None, quick: bool) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    out = [
        "# msgstatus vs the polling job it replaces" + (" (quick run)" if quick else ""),
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit or 'uncommitted'}`, {os.cpu_count()} cores, "
        f"{memory:.0f} GiB, Python {platform.python_version()}. Both systems ran one after the other against the "
        "same kind of servers, embedded MongoDB and Redis started afresh for each scenario (and each drain run), "
        "with the same socket receiver (which verifies every JWT). "
        f"Rerun: `make bench`{' (this was `--quick`)' if quick else ''}. The baseline is "
        "[bench/baseline_polling.py](baseline_polling.py).",
        "",
        "## Latency: communication insert to emit received (2 workers, SimpleWorker unless noted)",
        "",
        "| system | offered | emitted | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, rate), r in results.get("latency", {}).items():
        out.append(f"| {name} | {rate}/s | {r['emitted']}/{r['count']} | {r['p50']:.0f} | {r['p95']:.0f} | "
                   f"{r['p99']:.0f} | {r['max']:.0f} |")
    lat = results.get("latency", {})
    if ("msgstatus", 10) in lat and ("polling", 10) in lat:
        ratio = lat[("polling", 10)]["p50"] / lat[("msgstatus", 10)]["p50"]
        out += ["", f"At 10/s msgstatus's p50 is **{ratio:.0f} times lower** than the polling job's."]
    if png:
        out += ["", f"![latency distributions]({png.name})"]
    if results.get("max_rate"):
        out += ["", "Highest offered rate (of " + ", ".join(f"{r}/s" for r in plan.max_rates) + ") each system "
                f"kept up with for {plan.max_rate_seconds:.0f} s, 2 SimpleWorkers, every message emitted "
                "within 10 s: "
                + ", ".join(f"{n} {f'{r}/s' if r else 'none of them'}" for n, r in results["max_rate"].items())
                + "."]
    out += ["", f"## Backlog drain: {plan.drain_count:,} messages with their logs present at start",
            "", f"Measured until all were emitted or {plan.drain_cap:.0f} s passed.", "",
            "| system | workers | kind | emitted | seconds | messages/s | peak RSS watcher / worker |",
            "|---|---:|---|---:|---:|---:|---|"]
    for (name, workers, kind), r in results.get("drain", {}).items():
        peaks = r.get("peaks")
        rss = f"{peaks['watcher'] / 1024:.0f} / {peaks['worker'] / 1024:.0f} MiB" if peaks else "-"
        out.append(f"| {name} | {workers} | {kind} | {r['emitted']:,} | {r['seconds']:.1f} | {r['rate']:.1f} | {rss} |")
    idle = results.get("idle", {})
    if idle:
        stored = plan.idle_stored
        out += ["", f"## Idle: {stored:,} decided messages stored, nothing to do for {plan.idle_seconds:.0f} s", "",
                "| system | database server CPU s | Redis CPU s | own processes CPU s | own share of a core | "
                "database commands / minute |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in idle.items():
            out.append(f"| {name} | {r['db_cpu']:.2f} | {r['redis_cpu']:.2f} | {r['own_cpu']:.2f} | "
                       f"{r['own_cpu'] / r['seconds']:.1%} | {r['commands_per_minute']:.0f} |")
    if results.get("sweep"):
        out += ["", "## One sweep versus collection size (10 messages pending)", "",
                "| stored messages | polling: time ms | polling: documents matched against "
                "| msgstatus sweep: time ms | "
                "msgstatus: candidates examined |", "|---:|---:|---:|---:|---:|"]
        for size, r in results["sweep"].items():
            out.append(f"| {size:,} | {r['polling_ms']:.1f} | {r['polling_examined']:,} | {r['msgstatus_ms']:.1f} | "
                       f"{r['msgstatus_examined']} |")
    for error in results.get("errors", []):
        out += ["", f"**Did not complete:** {error}"]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small version, under a minute")
    parser.add_argument("--out", type=Path, default=HERE, help="directory for results.md and latency.png")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    scenarios = [bench_latency, bench_max_rate, bench_idle, bench_sweep_cost, bench_drain]
    for scenario in scenarios:
        # Fresh servers for each scenario: one that a system left busy for minutes cannot slow the next.
        rig = Rig()
        try:
            scenario(rig, plan, results)
        except Exception as error:  # one scenario's failure must not lose the others' results
            results.setdefault("errors", []).append(f"{scenario.__name__}: {type(error).__name__}: {error}")
            print(f"{scenario.__name__} did not complete: {error}", flush=True)
        finally:
            rig.close()
    png = args.out / "latency.png"
    text = report(results, plan, png if plot(results, png) else None, args.quick)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
