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
    if not results.get("samples"):
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


def plot_throughput(results: dict[str, Any], path: Path) -> bool:
    """Drain throughput against workers, one line per system and backlog size."""
    drain = results.get("drain", {})
    if not drain:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, count in sorted({(n, c) for n, c, _ in drain}):
        points = sorted((w, r["rate"]) for (n, c, w), r in drain.items() if (n, c) == (name, count))
        ax.plot([w for w, _ in points], [r for _, r in points], marker="o", label=f"{name}, backlog {count:,}")
    ax.set_xlabel("workers")
    ax.set_ylabel("messages emitted per second")
    ax.set_xticks(sorted({w for _, _, w in drain}))
    ax.set_title("Backlog drain throughput (embedded default, 2 cores)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def stamp() -> str:
    """When, which commit, and on what machine: the first words of every results file."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        commit += " with uncommitted changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit or 'unknown'}`, {os.cpu_count()} cores, "
            f"{memory:.0f} GiB, Python {platform.python_version()}")


def report(results: dict[str, Any], plan: Plan, png: Path | None, quick: bool, throughput: Path | None = None) -> str:
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
                + ".", "", "| system | offered | emitted | p50 ms | p99 ms | max ms |",
                "|---|---:|---:|---:|---:|---:|"]
        for (name, rate), r in results.get("rate_runs", {}).items():
            out.append(f"| {name} | {rate}/s | {r['emitted']}/{r['count']} | {r['p50']:.0f} | {r['p99']:.0f} | "
                       f"{r['max']:.0f} |")
    sustained = results.get("sustained")
    if sustained:
        out += ["", f"Sustained: {sustained['rate']}/s offered for {sustained['seconds']:.0f} s to msgstatus "
                f"(watcher, scheduler, 2 SimpleWorkers): {sustained['emitted']}/{sustained['count']} emitted, "
                f"insert to emit p50 {sustained['p50']:.0f} ms, p99 **{sustained['p99']:.0f} ms**, "
                f"max {sustained['max']:.0f} ms."]
    watcher = results.get("watcher_cpu")
    if watcher:
        out += ["", f"Watcher: {watcher['offered_per_s']} change events/s offered ({watcher['achieved_per_s']:.0f}/s "
                f"written), {watcher['events']:,} events cost it {watcher['cpu_s']:.2f} s of CPU: "
                f"**{watcher['ms_per_event']:.3f} ms per event**."]
    drain = results.get("drain", {})
    for count in sorted({c for _, c, _ in drain}):
        out += ["", f"## Backlog drain: {count:,} messages with their logs present at start", "",
                f"Measured from the systems' start until all were emitted or {plan.drain_cap:.0f} s passed "
                "(start-up included), and once draining (first emit to last); SimpleWorkers; both systems with the "
                "same workers, one after the other, on fresh servers.", "",
                "| workers | msgstatus messages/s | polling messages/s | ratio | once draining: msgstatus / polling "
                "| msgstatus emitted / s | polling emitted / s |", "|---:|---:|---:|---:|---|---|---|"]
        for workers in sorted({w for _, c, w in drain if c == count}):
            ours, theirs = drain.get(("msgstatus", count, workers)), drain.get(("polling", count, workers))
            if not ours or not theirs:
                continue
            ratio = ours["rate"] / theirs["rate"] if theirs["rate"] else float("inf")
            steady = (f"{ours['steady']:.0f} / {theirs['steady']:.0f} ({ours['steady'] / theirs['steady']:.1f}x)"
                      if ours.get("steady") and theirs.get("steady") else "-")
            out.append(f"| {workers} | {ours['rate']:.1f} | {theirs['rate']:.1f} | {ratio:.1f}x | {steady} | "
                       f"{ours['emitted']:,} / {ours['seconds']:.1f} | "
                       f"{theirs['emitted']:,} / {theirs['seconds']:.1f} |")
    if throughput:
        out += ["", f"![drain throughput against workers]({throughput.name})"]
    out += idle_lines(results, plan)
    if results.get("sweep"):
        out += ["", "## One sweep versus collection size (10 messages pending)", "",
                "| stored messages | polling: time ms | polling: documents matched against "
                "| msgstatus sweep: time ms | "
                "msgstatus: candidates examined |", "|---:|---:|---:|---:|---:|"]
        for size, r in results["sweep"].items():
            out.append(f"| {size:,} | {r['polling_ms']:.1f} | {r['polling_examined']:,} | {r['msgstatus_ms']:.1f} | "
                       f"{r['msgstatus_examined']} |")
    from bench.cost import cost_lines  # it uses this module's stamp()

    out += cost_lines(results, plan.cost)
    for error in results.get("errors", []):
        out += ["", f"**Did not complete:** {error}"]
    return "\n".join(out) + "\n"


IDLE_SECTION = "## Idle"
"""How the idle section's title begins (the rest names the run's figures)."""


def merge_into(path: Path, section: str, lines: list[str]) -> None:
    """Put a section (``lines``, its title first after a blank line) into an existing results file in
    place of the one whose title begins with ``section``, or at the end: a scenario rerun alone leaves the
    others as their run left them."""
    text = path.read_text() if path.exists() else "# msgstatus vs the polling job it replaces\n"
    head, found, rest = text.partition(f"\n{section}")
    after = rest[rest.find("\n## "):] if found and "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n" + "\n".join(lines) + "\n" + after)


def idle_lines(results: dict[str, Any], plan: Plan) -> list[str]:
    """The results file's section on the idle cost."""
    idle = results.get("idle", {})
    if not idle:
        return []
    title = f"{IDLE_SECTION}: {plan.idle_stored:,} decided messages stored, nothing to do for {plan.idle_seconds:.0f} s"
    out = ["", title,
           "", "Measured once the database server is quiet after the system's start (its index builds over the "
           "stored messages).", "",
           "| system | database server CPU s | Redis CPU s | own processes CPU s | own share of a core | "
           "database commands / minute |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in idle.items():
        out.append(f"| {name} | {r['db_cpu']:.2f} | {r['redis_cpu']:.2f} | {r['own_cpu']:.2f} | "
                   f"{r['own_cpu'] / r['seconds']:.1%} | {r['commands_per_minute']:.0f} |")
    return out
