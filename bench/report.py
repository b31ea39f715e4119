"""bench/results.md and the latency plot, from the results of ``bench.compare``."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.compare import Plan

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


def stamp() -> str:
    """When, which commit, and on what machine: the first words of every results file."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit or 'unknown'}`, {os.cpu_count()} cores, "
            f"{memory:.0f} GiB, Python {platform.python_version()}")


def report(results: dict[str, Any], plan: Plan, png: Path | None, quick: bool) -> str:
    out = [
        "# msgstatus vs the polling job it replaces" + (" (quick run)" if quick else ""),
        "",
        f"{stamp()}. Both systems ran one after the other against the "
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

