"""``msgstatus schedule``: rq-scheduler, enqueuing the sweep every SWEEP_INTERVAL seconds."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import pymongo
import redis
from rq_scheduler import Scheduler

from core.defaults import SWEEP_QUEUE
from core.outage import wait_for_redis
from core.settings import Settings
from jobs import messages
from jobs.queueing import status_queues
from jobs.retries import move_due
from jobs.sweep import run_sweep
from watcher import roles

log = logging.getLogger(__name__)

SWEEP_JOB_ID = "msgstatus-sweep"


def ensure_indexes(settings: Settings) -> None:
    """Create the indexes the job and the sweep use (idempotent, at startup)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    with client:
        messages.ensure_indexes(client[settings.database])


def run_scheduler(settings: Settings) -> None:
    """Schedule the sweep and run rq-scheduler until SIGTERM/SIGINT; ride out Redis outages."""
    ensure_indexes(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    stopping = threading.Event()
    try:
        while True:
            try:
                _scheduler(connection, settings, stopping).run()
                return
            except redis.exceptions.ConnectionError as error:
                if stopping.is_set():  # stopped while Redis was away: its clean-up could not reach Redis
                    log.info("scheduler stopped (Redis unavailable: %s)", error)
                    return
                # Redis may come back empty: the sweep is scheduled again then.
                log.warning("scheduler: lost Redis (%s)", error)
            if not wait_for_redis(connection, "scheduler"):
                return
    finally:
        connection.close()


class SweepScheduler(Scheduler):  # type: ignore[misc]
    """rq-scheduler that keeps the sweep scheduled, even after Redis restarts empty."""

    def __init__(self, connection: redis.Redis, settings: Settings, stopping: threading.Event) -> None:
        # rq-scheduler polls every 60 s by default; poll every second so a 5 s job runs every 5 s.
        super().__init__(queue_name=SWEEP_QUEUE, connection=connection, interval=1)
        self.settings = settings
        self.stopping = stopping
        self.status_queues = status_queues(connection)
        self.owner = f"scheduler-{uuid.uuid4().hex}"

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT end ``run``, whose ``finally`` unregisters the scheduler.

        rq-scheduler's own handler talks to Redis first, so while Redis is away it raises a
        ConnectionError instead of stopping, which ``run_scheduler`` takes for an outage to
        wait out. This one only marks the stop, which outlives any error the clean-up meets.
        """

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("scheduler stopping (%s)", signal.Signals(signum).name)
            self.stopping.set()
            raise SystemExit

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def schedule_sweep(self) -> None:
        """(Re)schedule the sweep every SWEEP_INTERVAL seconds, starting now."""
        if SWEEP_JOB_ID in self:
            self.cancel(SWEEP_JOB_ID)
        interval = self.settings.sweep_interval
        self.schedule(
            scheduled_time=datetime.now(UTC).replace(tzinfo=None),
            func=run_sweep,
            interval=interval,
            repeat=None,
            id=SWEEP_JOB_ID,
            result_ttl=interval * 10,
            ttl=interval * 10,
            description=f"sweep every {interval}s",
        )
        log.info("sweep scheduled every %ds on queue %s", interval, SWEEP_QUEUE)

    def enqueue_jobs(self) -> Any:
        # A Redis that came back empty has lost the schedule without an error reaching us.
        if SWEEP_JOB_ID not in self:
            log.warning("scheduler: the sweep's schedule is gone from Redis (restarted empty?); scheduling it again")
            self.schedule_sweep()
        # Status-job retries too: this process is what moves them (jobs.retries), every second.
        released = sum(move_due(queue) for queue in self.status_queues)
        if self.settings.sweep_only:  # configured without a watcher: the sweep alone finds messages
            roles.announce(self.connection, self.owner, "sweep_only")
        if released:
            log.debug("scheduler: %d due retries enqueued", released)
        return super().enqueue_jobs()


    def enqueue_job(self, job: Any) -> None:
        # A sweep still waiting on its queue (no worker takes it) covers the next one: push it once and
        # keep only its schedule moving, instead of piling up one sweep per interval.
        if job.id == SWEEP_JOB_ID and job.id in self.get_queue_for_job(job).job_ids:
            self.connection.zadd(self.scheduled_jobs_key, {job.id: time.time() + self.settings.sweep_interval})
            log.debug("scheduler: the last sweep still waits for a worker; not queued again")
            return
        super().enqueue_job(job)


def _scheduler(connection: redis.Redis, settings: Settings, stopping: threading.Event) -> SweepScheduler:
    scheduler = SweepScheduler(connection, settings, stopping)
    scheduler.schedule_sweep()
    return scheduler
