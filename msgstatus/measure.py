"""The gauges of ``/metrics``, measured when it is scraped: what waits, how old, who watches."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
from pymongo.database import Database
from pymongo.errors import PyMongoError
from rq import Queue

from core import metrics
from core.defaults import QUEUE
from core.metrics import Gauge, Sample
from core.settings import Settings
from jobs import messages
from msgstatus.status import held
from watcher import roles
from watcher.stream import STREAMS
from watcher.tokens import TokenStore

log = logging.getLogger(__name__)


def gauges(settings: Settings, connection: redis.Redis, db: Database) -> dict[Gauge, Iterable[Sample]]:  # type: ignore[type-arg]
    """Every gauge's samples; those MongoDB answers are left out while it does not."""
    queue = Queue(QUEUE, connection=connection)
    found: dict[Gauge, Iterable[Sample]] = {
        metrics.QUEUED: [({}, queue.count)],
        metrics.SCHEDULED: [({}, queue.scheduled_job_registry.count)],
        metrics.FAILED: [({}, queue.failed_job_registry.count)],
        metrics.SWEEP_INTERVAL: [({}, settings.sweep_interval)],
        metrics.WATCHERS: [({"role": role}, n) for role, n in sorted(roles.count(connection).items())],
        metrics.TOKEN_AGE: list(_token_ages(connection)),
    }
    try:
        waiting = held(db)
        found[metrics.SLOW_RETRIES] = [({}, waiting["slow_retries"])]
        found[metrics.PARKED] = [({}, waiting["parked"])]
        found[metrics.UNDECIDED_AGE] = [({}, oldest_undecided_age(db))]
    except PyMongoError as error:
        log.warning("metrics: MongoDB did not answer (%s); its gauges are left out of this scrape", error)
    return found


def oldest_undecided_age(db: Database) -> float:  # type: ignore[type-arg]
    """Seconds since the oldest tracked message without a decision was written; 0 if there is none."""
    oldest = db[messages.MESSAGES].find_one(messages.TRACKED, {"created": 1, "createdAt": 1}, sort=[("_id", 1)])
    if oldest is None:
        return 0.0
    return round(max(0.0, (messages.now() - messages.inserted_at(oldest)).total_seconds()), 1)


def _token_ages(connection: redis.Redis) -> Iterable[Sample]:
    tokens = TokenStore(connection)
    for spec in STREAMS:
        saved = tokens.info(spec.name).get("saved")
        if saved is not None:
            yield {"stream": spec.name}, round(max(0.0, time.time() - saved), 1)
