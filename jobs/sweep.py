"""The sweep: the safety net that finds what no event brought (the seed's 5-second cron, made cheap)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from pymongo.database import Database
from rq import Queue
from rq.exceptions import DuplicateJobError

from core import metrics
from core.defaults import SWEEP_BATCH, SWEEP_QUEUE
from jobs import communications, context, leases, messages
from jobs.queueing import BATCH_SIZE, Enqueuer, status_queue

log = logging.getLogger(__name__)

PAGE = 200
"""Candidates checked for a communication log in one query."""

RETIRE_BATCH = 500
"""Candidates past LOG_HORIZON one sweep examines at most (a cut-over brings thousands; each sweep retires its
share, the newest first)."""

MORE_JOB_ID = "msgstatus-sweep-more"

LAST_SWEEP_KEY = "msgstatus:sweep:last"
"""When a sweep job last ran, deferred or not (epoch seconds): the scheduler and a worker are alive."""

WAITING_JOBS = SWEEP_BATCH // BATCH_SIZE
"""Status jobs waiting in the queue from which a sweep defers: about a sweep's worth of messages in batches."""


@dataclass
class SweepResult:
    """What one sweep looked at and did."""

    examined: int = 0
    with_log: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    full: bool = False

    @property
    def enqueued(self) -> int:
        return self.outcomes["enqueued"] + self.outcomes["follow-up"]

    def as_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "with_log": self.with_log, "enqueued": self.enqueued,
                **dict(self.outcomes), "seconds": round(self.seconds, 4)}


def sweep(db: Database, enqueuer: Enqueuer, batch: int, horizon: float | None) -> SweepResult:  # type: ignore[type-arg]
    """Enqueue up to ``batch`` tracked, unclaimed messages that have a communication log, newest first.

    Looks at two index-backed sets, so that its cost follows what is due, not
    what is stored or what failed: undecided messages not held (those unclaimed,
    or whose claim ran out or whose job died, ``jobs.leases``), and held messages
    whose slow retry has come. A message it finds without a log and created more
    than ``horizon`` seconds ago is retired (``messages.retire``): no regular sweep
    looks at it again, its log's event still decides it; RETIRE_BATCH such
    messages at most per sweep. ``horizon`` None: retired messages are looked at
    too, and none is retired.
    Idempotent: two sweeps at once enqueue under the same job ids, and the claim
    makes any second run of a job harmless.
    """
    started = time.monotonic()
    result = SweepResult()
    at = messages.now()
    collection = db[messages.MESSAGES]
    fields = {"_id": 1, "created": 1, messages.CLAIM: 1}
    found = list(collection.find(messages.sweepable(), fields))
    if horizon is None:
        found += collection.find(messages.retired(), fields)
    # Newest first, sorted here: the embedded server sorts 10,000 candidates four times slower than it finds them.
    fresh = sorted(_free_or_dead(found, enqueuer.queue.connection, at), key=_newest_first)
    since = None if horizon is None else at - timedelta(seconds=horizon)
    past: set[Any] = set()
    if since is not None:
        recent = [m for m in fresh if messages.within(m, since)]
        older = [m for m in fresh if not messages.within(m, since)][:RETIRE_BATCH]
        fresh, past = recent + older, {m["_id"] for m in older}
    due = collection.find(messages.due(at), {"_id": 1})
    page: list[Any] = []
    for message in itertools.chain(fresh, due):
        page.append(message["_id"])
        if len(page) == PAGE:
            if _enqueue_page(db, enqueuer, page, result, batch, past):
                break
            page = []
    else:
        _enqueue_page(db, enqueuer, page, result, batch, past)
    result.seconds = time.monotonic() - started
    connection = enqueuer.queue.connection
    with metrics.counting(connection) as pipe:
        metrics.SWEEPS.inc(pipe)
        metrics.SWEEP_EXAMINED.inc(pipe, result.examined)
        metrics.SWEEP_ENQUEUED.inc(pipe, result.enqueued)
    metrics.SWEEP_DURATION.observe(connection, result.seconds)
    if result.enqueued or result.outcomes["failed"] or result.outcomes["retired"]:
        log.info("sweep: %s", result.as_dict())
    else:
        log.debug("sweep: %s", result.as_dict())
    return result


def _newest_first(message: dict[str, Any]) -> tuple[bool, float]:
    created = message.get("created")
    if not isinstance(created, datetime):
        return True, 0.0  # no date: after every dated one
    return False, -messages.as_utc(created).timestamp()


def _free_or_dead(found: list[dict[str, Any]], connection: Any, at: datetime) -> list[dict[str, Any]]:
    """The messages not claimed, or whose claim ran out or whose job no longer runs (``jobs.leases``)."""
    free: list[dict[str, Any]] = []
    claimed: dict[str, list[dict[str, Any]]] = {}  # a batch job's messages share its token
    for message in found:
        claim = message.get(messages.CLAIM)
        until = claim.get("until") if isinstance(claim, dict) else None
        if isinstance(until, datetime) and messages.as_utc(until) >= at:
            claimed.setdefault(str(claim["token"]), []).append(message)  # type: ignore[index]
        else:
            free.append(message)
    living = leases.alive(connection, claimed)
    return free + [message for token, held in claimed.items() if not living[token] for message in held]


def _enqueue_page(
    db: Database, enqueuer: Enqueuer, page: list[Any], result: SweepResult, batch: int,  # type: ignore[type-arg]
    past: set[Any],
) -> bool:
    """Enqueue the page's messages that have a log, together, and retire those ``past`` the log horizon
    without one; True once ``batch`` are enqueued."""
    result.examined += len(page)
    named = communications.with_communication(db, page) if page else set()
    chosen = [str(oid) for oid in page if oid in named][: max(0, batch - result.enqueued)]
    result.with_log += len(chosen)
    result.outcomes.update(enqueuer.enqueue_many(chosen))
    if past:
        result.outcomes["retired"] += messages.retire(db, [oid for oid in page if oid in past and oid not in named],
                                                      messages.now())
    if result.enqueued >= batch:
        result.full = True
        return True
    return False


def run_sweep(full: bool = False) -> dict[str, Any]:
    """RQ job (every SWEEP_INTERVAL via ``msgstatus schedule``, or the watcher's catch-up): one sweep.

    It retires messages that waited for their log past LOG_HORIZON; a ``full`` one (the watcher's catch-up,
    after events may have been missed) and every sweep of a sweep-only deployment (no events at all) look
    at retired messages too.

    While a batch or more of status jobs already waits, sweeping again would only
    re-find queued messages and keep the workers from them: the sweep defers and
    looks again a second later. A full batch means more is waiting: another sweep
    follows as soon as the queue is short. A backlog so drains at the workers'
    pace, without one batch per interval and without flooding the queue.
    """
    res = context.resources()
    with contextlib.suppress(redis.RedisError):  # a record for `msgstatus status`, never a reason to fail
        res.redis.set(LAST_SWEEP_KEY, time.time())
    queue = status_queue(res.redis)
    waiting = queue.count
    if waiting >= WAITING_JOBS:
        metrics.SWEEPS_DEFERRED.inc(res.redis)
        _sweep_again(res.redis, later=True, full=full)
        log.debug("sweep deferred: %d status jobs already waiting", waiting)
        return {"deferred": True, "waiting": waiting}
    horizon = None if full or res.settings.sweep_only else res.settings.log_horizon
    result = sweep(res.db, Enqueuer(queue), SWEEP_BATCH, horizon)
    if result.full:
        _sweep_again(res.redis, later=queue.count >= WAITING_JOBS, full=full)
    return result.as_dict()


def sweep_soon(connection: Any) -> None:
    """A sweep now, unless one already waits."""
    _sweep_again(connection, later=False)


def _sweep_again(connection: Any, later: bool, full: bool = False) -> None:
    """One follow-up sweep, now or in a second (at most one waits at a time)."""
    sweeps = Queue(SWEEP_QUEUE, connection=connection)
    options: dict[str, Any] = {"job_id": MORE_JOB_ID, "unique": True, "result_ttl": 0,
                               "description": "sweep (continued)", "args": (full,)}
    with contextlib.suppress(DuplicateJobError):
        if later:
            sweeps.enqueue_in(timedelta(seconds=1), run_sweep, **options)
        else:
            sweeps.enqueue(run_sweep, **options)


def last_sweep(connection: redis.Redis) -> float | None:
    """When a sweep job last ran (epoch seconds); None if none has (on this Redis)."""
    raw = connection.get(LAST_SWEEP_KEY)
    return None if raw is None else float(raw)  # type: ignore[arg-type]
