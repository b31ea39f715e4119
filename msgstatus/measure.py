"""The gauges of ``/metrics``, measured when it is scraped: what waits, how old, who watches."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from pymongo.database import Database
from pymongo.errors import PyMongoError
from rq import Queue

from core import metrics
from core.defaults import QUEUE
from core.metrics import Gauge, Sample
from core.settings import Settings
from msgstatus.status import held, log_split, oldest_waiting_age, streams
from watcher import roles

log = logging.getLogger(__name__)


def gauges(settings: Settings, connection: redis.Redis, db: Database) -> dict[Gauge, Iterable[Sample]]:  # type: ignore[type-arg]
    """Every gauge's samples; those MongoDB answers are left out while it does not."""
    queue = Queue(QUEUE, connection=connection)
    found: dict[Gauge, Iterable[Sample]] = {
        metrics.QUEUED: [({}, queue.count)],
        metrics.SCHEDULED: [({}, queue.scheduled_job_registry.count)],
        metrics.FAILED: [({}, queue.failed_job_registry.count)],
        metrics.SWEEP_INTERVAL: [({}, settings.sweep_interval)],
        metrics.ENABLED: [({}, 1 if settings.enabled else 0)],
        metrics.WATCHERS: [({"role": role}, n) for role, n in sorted(roles.count(connection).items())],
        metrics.TOKEN_AGE: [({"stream": name}, ages["token_age_seconds"])
                            for name, ages in streams(connection).items() if ages["token_age_seconds"] is not None],
    }
    try:
        waiting = held(db)
        found[metrics.SLOW_RETRIES] = [({}, waiting["slow_retries"])]
        found[metrics.PARKED] = [({}, waiting["parked"])]
        found[metrics.UNDECIDED_AGE] = [({}, oldest_waiting_age(db) or 0.0)]
        split = log_split(db, settings.log_horizon, waiting["slow_retries"] + waiting["parked"])
        found[metrics.WITH_LOG] = [({}, split["with_log"])]
        found[metrics.WITH_LOG_AGE] = [({}, split["oldest_with_log_age_seconds"] or 0.0)]
        found[metrics.WAITING_FOR_LOG] = [({"horizon": k}, n) for k, n in split["waiting_for_log"].items()]
        found[metrics.WAITING_FOR_LOG_AGE] = [({}, split["oldest_waiting_for_log_age_seconds"] or 0.0)]
    except PyMongoError as error:
        log.warning("metrics: MongoDB did not answer (%s); its gauges are left out of this scrape", error)
    return found

