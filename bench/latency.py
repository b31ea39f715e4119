"""Latency from a communication's insert to the emit, through ``msgstatus run`` on the embedded default.

Run: ``python -m bench.latency [--messages 600] [--rate 10] [--simple] [--idle 600] [--orphans 10000]``.
Prints p50/p95/p99/max, and with --idle the watcher's RSS at start and after that many idle seconds. With
--orphans, that many tracked messages two to three hours old whose logs never came are stored first.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from msgstatus.harness import RunningService, rss_kib


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def offer(service: RunningService, messages: int, rate: float) -> list[float]:
    """Write message + communication pairs at ``rate``/s; latencies (ms) from comm insert to emit."""
    inserted: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def on_emit(emit) -> None:  # type: ignore[no-untyped-def]
        started = inserted.get(emit.message_id)
        if started is not None:
            latencies.append((emit.received - started) * 1000)
            if len(latencies) >= messages:
                done.set()

    service.receiver.listeners.append(on_emit)
    began = time.monotonic()
    for i in range(messages):
        mid = ObjectId()
        service.db.support_messages.insert_one({
            "_id": mid, "sender_type": "conversation", "sender_id": ObjectId(), "source": "sms",
            "created": datetime.now(UTC), "metadata": {},
        })
        inserted[str(mid)] = time.time()
        service.db.communications.insert_one(
            {"conv_message_id": mid, "account_id": ObjectId(), "success": True, "provider": "twilio"}
        )
        inserted[str(mid)] = time.time()
        pause = began + (i + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    done.wait(60)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--simple", action="store_true")
    parser.add_argument("--sweep-only", action="store_true", help="no watcher: the 5 s sweep alone")
    parser.add_argument("--idle", type=float, default=0, help="seconds idle afterwards, for the watcher's RSS")
    parser.add_argument("--orphans", type=int, default=0, help="old tracked messages whose logs never came")
    args = parser.parse_args()
    service = RunningService(["--workers", str(args.workers), "--simple" if args.simple else "--fork",
                              *(["--sweep-only"] if args.sweep_only else [])])
    try:
        service.wait_ready(sweep_only=args.sweep_only)
        if args.orphans:
            now = datetime.now(UTC)
            service.db.support_messages.insert_many([
                {"sender_type": "conversation", "sender_id": ObjectId(), "source": "sms", "metadata": {},
                 "created": now - timedelta(hours=2, seconds=i % 3600)} for i in range(args.orphans)])
        name = "scheduler" if args.sweep_only else "watcher"
        watcher = service.children()[name]
        rss_start = rss_kib(watcher)
        latencies = offer(service, args.messages, args.rate)
        stats = percentiles(latencies)
        kind = ("SimpleWorker" if args.simple else "forking Worker") + (", sweep-only" if args.sweep_only else "") \
            + (f", {args.orphans} messages without logs stored" if args.orphans else "")
        print(f"{len(latencies)}/{args.messages} emits at {args.rate}/s, {args.workers} x {kind}: "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in stats.items()))
        print(f"{name} RSS at start {rss_start} KiB, after the run {rss_kib(watcher)} KiB")
        if args.idle:
            idle_start = rss_kib(watcher)
            time.sleep(args.idle)
            print(f"{name} RSS after {args.idle:.0f}s idle: {rss_kib(watcher)} KiB (was {idle_start} KiB)")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
