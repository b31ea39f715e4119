"""``make bench-healing``: what failures cost after the fact, on the embedded default.

1. A sweep with 0 and with 2,000 messages that wait for slow retries or are parked (the median of 20).
2. Time to heal 2,000 messages whose emits were refused with 401 until the socket service accepts again:
   ``msgstatus run --workers 2`` with FAST_ATTEMPTS=2 and SLOW_RETRY=30 (compressed, so that all 2,000
   are held within a minute), then the receiver answers 200 and the clock runs until all are delivered.

Writes bench/healing-results.md (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bson import ObjectId

from bench.report import stamp
from bench.rig import Rig, comm_doc, message_doc
from core.defaults import LOG_HORIZON
from jobs import messages
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import sweep
from msgstatus.harness import RunningService

HERE = Path(__file__).parent
HELD = 2_000


def sweep_cost(rig: Rig, held: int) -> tuple[float, int]:
    """Median seconds of 20 sweeps, and what the last one examined, with ``held`` held messages stored."""
    rig.reset()
    messages.ensure_indexes(rig.db)
    now = datetime.now(UTC)
    if held:
        mids = [ObjectId() for _ in range(held)]
        docs = [message_doc(m) for m in mids]
        for i, doc in enumerate(docs):
            doc[messages.HOLD] = ({"kind": "retry", "until": now + timedelta(minutes=5), "since": now}
                                  if i % 2 else {"kind": "parked", "since": now, "error": "no account_id"})
        rig.db.support_messages.insert_many(docs)
        rig.db.communications.insert_many([comm_doc(m) for m in mids])
    enqueuer = Enqueuer(status_queue(rig.redis))
    times, examined = [], 0
    for _ in range(20):
        result = sweep(rig.db, enqueuer, 500, LOG_HORIZON)
        times.append(result.seconds)
        examined = result.examined
    return statistics.median(times), examined


def heal(count: int) -> tuple[float, float]:
    """Seconds until ``count`` refused messages are all held, then until all are delivered once accepted."""
    env = {"FAST_ATTEMPTS": "2", "SLOW_RETRY": "30", "LOG_LEVEL": "WARNING"}
    service = RunningService(["--workers", "2", "--simple", "--api-port", "0"], env=env)
    try:
        service.wait_ready()
        service.receiver.behaviour.status = 401
        began = time.monotonic()
        mids = [ObjectId() for _ in range(count)]
        service.db.support_messages.insert_many([message_doc(m) for m in mids])
        service.db.communications.insert_many([comm_doc(m) for m in mids])
        held = {f"{messages.HOLD}.kind": "retry", "delivered": {"$exists": False}}
        while service.db.support_messages.count_documents(held) < count:
            time.sleep(0.5)
        all_held = time.monotonic() - began
        service.receiver.behaviour.status = 200
        accepted = time.monotonic()
        while service.db.support_messages.count_documents({"delivered": True}) < count:
            time.sleep(0.2)
        return all_held, time.monotonic() - accepted
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "healing-results.md")
    args = parser.parse_args()
    rig = Rig()
    try:
        empty, _ = sweep_cost(rig, 0)
        full, examined = sweep_cost(rig, HELD)
    finally:
        rig.close()
    all_held, healed = heal(HELD)
    text = "\n".join([
        "# Healing results", "",
        f"{stamp()}. Rerun: `make bench-healing` (`python -m bench.healing`).", "",
        "| measure | value |", "|---|---:|",
        f"| sweep, nothing held (median of 20) | {empty * 1000:.1f} ms |",
        f"| sweep, {HELD:,} held (half waiting for slow retries, half parked), median of 20 | {full * 1000:.1f} ms "
        f"({full / empty:.2f}x; examined {examined}) |",
        f"| {HELD:,} messages refused with 401: all waiting for slow retries after | {all_held:.1f} s |",
        f"| then, from the socket service accepting again to all {HELD:,} delivered | {healed:.1f} s |",
        "", "The heal run: `FAST_ATTEMPTS=2 SLOW_RETRY=30 msgstatus run --workers 2 --simple`; the first slow "
        "retry that succeeds wakes every held message (at most one slow-retry interval after the socket service "
        "is back), and the sweeps enqueue them 500 at a time.", "",
    ])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
