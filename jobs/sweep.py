"""The sweep: the safety net that finds what no event brought (the seed's 5-second cron, made cheap)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from jobs import context, messages
from jobs.queueing import Enqueuer, status_queue
from msgstatus import counters
from msgstatus.defaults import SWEEP_BATCH

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What one sweep looked at and did."""

    examined: int = 0
    with_log: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def enqueued(self) -> int:
        return self.outcomes["enqueued"] + self.outcomes["follow-up"]

    def as_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "with_log": self.with_log, "enqueued": self.enqueued,
                **dict(self.outcomes), "seconds": round(self.seconds, 4)}


def has_communication(db: Database, message_id: Any) -> bool:  # type: ignore[type-arg]
    """Whether any communication log names the message (by ObjectId or its 24-hex string)."""
    coll = db[messages.COMMUNICATIONS]
    return any(coll.find_one({"conv_message_id": key}, {"_id": 1}) for key in (message_id, str(message_id)))


def sweep(db: Database, enqueuer: Enqueuer, batch: int) -> SweepResult:  # type: ignore[type-arg]
    """Enqueue up to ``batch`` tracked, unclaimed messages that have a communication log, newest first.

    Idempotent: two sweeps at once enqueue under the same job ids, and the claim
    makes any second run of a job harmless.
    """
    started = time.monotonic()
    result = SweepResult()
    candidates = db[messages.MESSAGES].find(
        {**messages.TRACKED, **messages.unclaimed(messages.now())}, {"_id": 1}
    ).sort("created", -1)
    for message in candidates:
        result.examined += 1
        if not has_communication(db, message["_id"]):
            continue
        result.with_log += 1
        result.outcomes[enqueuer.enqueue(str(message["_id"]))] += 1
        if result.enqueued >= batch:
            break
    result.seconds = time.monotonic() - started
    connection = enqueuer.queue.connection
    counters.incr(connection, "sweeps_run")
    counters.incr(connection, "sweep_examined", result.examined)
    counters.incr(connection, "sweep_enqueued", result.enqueued)
    if result.enqueued or result.outcomes["failed"]:
        log.info("sweep: %s", result.as_dict())
    else:
        log.debug("sweep: %s", result.as_dict())
    return result


def run_sweep() -> dict[str, Any]:
    """RQ job (scheduled every SWEEP_INTERVAL by ``msgstatus schedule``): one sweep."""
    res = context.resources()
    return sweep(res.db, Enqueuer(status_queue(res.redis)), SWEEP_BATCH).as_dict()

