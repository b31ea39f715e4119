"""``msgstatus schedule``: rq-scheduler, enqueuing the sweep every SWEEP_INTERVAL seconds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pymongo
import redis
from rq_scheduler import Scheduler

from jobs import messages
from jobs.sweep import run_sweep
from msgstatus.defaults import SWEEP_QUEUE
from msgstatus.settings import Settings

log = logging.getLogger(__name__)

SWEEP_JOB_ID = "msgstatus-sweep"


def ensure_indexes(settings: Settings) -> None:
    """Create the indexes the job and the sweep use (idempotent, at startup)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    with client:
        messages.ensure_indexes(client[settings.database])


def run_scheduler(settings: Settings) -> None:
    """Schedule the sweep and run rq-scheduler until SIGTERM/SIGINT."""
    ensure_indexes(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    # rq-scheduler polls every 60 s by default; poll every second so a 5 s job runs every 5 s.
    scheduler = Scheduler(queue_name=SWEEP_QUEUE, connection=connection, interval=1)
    if SWEEP_JOB_ID in scheduler:
        scheduler.cancel(SWEEP_JOB_ID)
    scheduler.schedule(
        scheduled_time=datetime.now(UTC).replace(tzinfo=None),
        func=run_sweep,
        interval=settings.sweep_interval,
        repeat=None,
        id=SWEEP_JOB_ID,
        result_ttl=settings.sweep_interval * 10,
        ttl=settings.sweep_interval * 10,
        description=f"sweep every {settings.sweep_interval}s",
    )
    log.info("sweep scheduled every %ds on queue %s", settings.sweep_interval, SWEEP_QUEUE)
    try:
        scheduler.run()
    finally:
        connection.close()
