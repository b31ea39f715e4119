"""Putting status jobs on the queue: one job id per message, so that a message never waits twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from core.defaults import LEGACY_QUEUES, QUEUE
from jobs import retries

log = logging.getLogger(__name__)

JOB_FUNCTION = "jobs.status.check_message_status"
"""The status job, by name: RQ imports it in the worker."""

FINAL = "msgstatus_final"
"""Job meta flag: the job itself concluded that it failed (as opposed to dying with its worker)."""

FAILURE_TTL = 7 * 24 * 3600
"""Seconds a failed job stays in RQ's failed registry."""

OVERDUE_RETRY = 15
"""Seconds past its time after which a scheduled retry counts as abandoned.

``msgstatus schedule`` moves due retries every second; a retry this late means
no scheduler runs, and an event or sweep for its message moves it instead.
"""

Outcome = Literal["enqueued", "waiting", "follow-up", "failed"]


def job_id(message_id: str) -> str:
    """The job id of a message's status job (RQ allows letters, digits, _ and -)."""
    return f"status-{message_id}"


def status_queue(redis: Redis) -> Queue:
    return Queue(QUEUE, connection=redis)


def status_queues(redis: Redis) -> list[Queue]:
    """The status queue and the names earlier versions used, still drained."""
    return [status_queue(redis), *(Queue(name, connection=redis) for name in LEGACY_QUEUES)]


@dataclass
class Enqueuer:
    """Enqueues status jobs so that a message has at most one job waiting."""

    queue: Queue

    def enqueue(self, message_id: str) -> Outcome:
        """Queue the status job of ``message_id`` unless one is already waiting for it."""
        primary = job_id(message_id)
        try:
            self._enqueue(message_id, primary)
            return "enqueued"
        except DuplicateJobError:
            pass
        job = self._fetch(primary)
        status = job.get_status(refresh=False) if job else None
        if job is not None and status == JobStatus.SCHEDULED:
            if self._abandoned(job) and retries.move(self.queue.connection, job.id):
                log.warning("message %s: its retry was due over %ds ago or in no registry; enqueued now",
                            message_id, OVERDUE_RETRY)
                return "enqueued"
            return "waiting"
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED):
            return "waiting"
        if job is not None and status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            if job.meta.get(FINAL):
                return "failed"  # its data needs an operator: `msgstatus requeue --failed`
            # Stopped from outside (its worker died, a timeout, a shutdown): run it again.
            job.delete()
            try:
                self._enqueue(message_id, primary)
                return "enqueued"
            except DuplicateJobError:
                return "waiting"
        # The job is running and may have looked before this event: one follow-up
        # run after it (the claim makes a second run harmless).
        try:
            self._enqueue(message_id, f"{primary}-again")
            return "follow-up"
        except DuplicateJobError:
            return "waiting"

    def _enqueue(self, message_id: str, jid: str) -> None:
        self.queue.enqueue(
            JOB_FUNCTION,
            message_id,
            job_id=jid,
            unique=True,
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            description=f"delivery status of message {message_id}",
        )

    def _abandoned(self, job: Job) -> bool:
        """Long overdue, or SCHEDULED in no registry (then nothing else would ever run it)."""
        registry = Queue(job.origin or self.queue.name, connection=self.queue.connection).scheduled_job_registry
        try:
            due = registry.get_scheduled_time(job)
        except NoSuchJobError:
            return True
        return (datetime.now(UTC) - due).total_seconds() > OVERDUE_RETRY

    def _fetch(self, jid: str) -> Job | None:
        try:
            return Job.fetch(jid, connection=self.queue.connection)
        except Exception:  # vanished between the two calls
            return None
