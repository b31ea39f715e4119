"""Messages whose log never comes: a sweep's duration and a new message's latency with none and with 10,000.

Run: ``python -m bench.orphans [--orphans 10000] [--messages 300] [--rate 10]`` (``make orphans``). Two runs of
``msgstatus run --workers 2 --simple`` on the embedded default, one after the other in one process: the first
with no such message, the second with ``--orphans`` tracked messages two to three hours old (past
LOG_HORIZON) stored before. In each, sweeps (each after a new message and its log) are timed in this process,
then the latency from a log's insert to its emit. Writes bench/orphans-results.md (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bson import ObjectId

from bench.latency import offer, percentiles
from bench.report import stamp
from core.defaults import LOG_HORIZON, SWEEP_BATCH
from jobs.messages import retired
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import RETIRE_BATCH, sweep
from msgstatus.harness import RunningService

HERE = Path(__file__).parent
SWEEPS = 20
"""Sweeps timed in each run."""


@dataclass
class Run:
    orphans: int
    retiring: list[float] = field(default_factory=list)
    """Seconds of each sweep that retired orphans."""
    sweeps: list[float] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)


def measure(orphans: int, messages: int, rate: float) -> Run:
    """One service, ``orphans`` stored; its sweeps and latencies."""
    run = Run(orphans)
    service = RunningService(["--workers", "2", "--simple", "--api-port", "0"])
    try:
        service.wait_ready()
        db = service.db
        enqueuer = Enqueuer(status_queue(service.redis))
        if orphans:
            now = datetime.now(UTC)
            db.support_messages.insert_many([
                {"sender_type": "conversation", "sender_id": ObjectId(), "source": "sms", "metadata": {},
                 "created": now - timedelta(hours=2, seconds=i % 3600)} for i in range(orphans)])
            # The service's own sweeps retire them too, side by side with these (each takes its share)
            deadline = time.monotonic() + 600
            while db.support_messages.count_documents(retired()) < orphans and time.monotonic() < deadline:
                result = sweep(db, enqueuer, SWEEP_BATCH, LOG_HORIZON)
                if result.outcomes["retired"]:
                    run.retiring.append(result.seconds)
        for _ in range(SWEEPS):
            mid = ObjectId()
            db.support_messages.insert_one({"_id": mid, "sender_type": "conversation", "sender_id": ObjectId(),
                                            "source": "sms", "created": datetime.now(UTC), "metadata": {}})
            db.communications.insert_one({"conv_message_id": mid, "account_id": ObjectId(), "success": True})
            run.sweeps.append(sweep(db, enqueuer, SWEEP_BATCH, LOG_HORIZON).seconds)
            time.sleep(0.2)  # the workers decide it before the next sweep: each sweep finds one new message
        run.latency = percentiles(offer(service, messages, rate))
    finally:
        service.stop()
    return run


def report(none: Run, many: Run, messages: int, rate: float) -> str:
    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    sweep_ratio = ms(many.sweeps) / ms(none.sweeps)
    lines = [
        "# Messages whose log never comes", "",
        f"{stamp()}. Rerun: `make orphans` (`python -m bench.orphans`). Two runs of `msgstatus run --workers 2 "
        f"--simple` on the embedded default, one after the other: without, then with {many.orphans:,} tracked "
        f"messages created two to three hours ago whose logs never came (past `LOG_HORIZON`, {LOG_HORIZON} s). "
        f"A sweep, timed in the benchmark's process, follows each of {SWEEPS} new messages with their logs "
        f"(median shown); then {messages} messages at {rate:g}/s, latency from the log's insert to the emit.", "",
        "| | no such message | " + f"{many.orphans:,} of them | ratio |", "|---|---:|---:|---:|",
        f"| sweep (median, ms) | {ms(none.sweeps):.1f} | {ms(many.sweeps):.1f} | {sweep_ratio:.2f} |",
    ]
    for key in ("p50", "p95", "p99"):
        lines.append(f"| latency {key} (ms) | {none.latency[key]:.1f} | {many.latency[key]:.1f} | "
                     f"{many.latency[key] / none.latency[key]:.2f} |")
    lines += [
        "", f"Retiring them took {len(many.retiring)} sweeps of this process besides the service's own "
        f"({RETIRE_BATCH} at most each), {max(many.retiring, default=0) * 1000:.0f} ms the longest: once, as they "
        "pass the horizon (a cut-over "
        "brings them all at once); a retired message is skipped by the sweeps' index from then on.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orphans", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "orphans-results.md")
    args = parser.parse_args()
    none = measure(0, args.messages, args.rate)
    many = measure(args.orphans, args.messages, args.rate)
    text = report(none, many, args.messages, args.rate)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
