"""Putting status jobs on the queue: one job id per message, and the retry schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import tenacity
from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from jobs.wakeup import release_now
from msgstatus.defaults import MAX_BACKOFF, QUEUE

log = logging.getLogger(__name__)

FINAL = "msgstatus_final"
"""Job meta flag: the job itself concluded that it failed (as opposed to dying with its worker)."""

FAILURE_TTL = 7 * 24 * 3600
"""Seconds a failed job stays in RQ's failed registry (and keeps the sweep off that message)."""

OVERDUE_RETRY = 15
"""Seconds past its time after which a scheduled retry counts as abandoned.

RQ's scheduler moves due retries every second, but only the worker holding its
queue lock runs it, and a killed worker's lock lives on for 61 s (then up to
120 s more until another worker tries again): its retries would wait that long.
"""

_BACKOFF = tenacity.wait_exponential(multiplier=1, min=1, max=MAX_BACKOFF)

Outcome = Literal["enqueued", "waiting", "follow-up", "failed"]


def retry_delay(attempt: int) -> int:
    """Seconds to wait after failed attempt number ``attempt``: 1, 2, 4, 8... (tenacity's schedule)."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return round(_BACKOFF(state))


def job_id(message_id: str) -> str:
    """The job id of a message's status job (RQ allows letters, digits, _ and -)."""
    return f"status-{message_id}"


def status_queue(redis: Redis) -> Queue:
    return Queue(QUEUE, connection=redis)


@dataclass
class Enqueuer:
    """Enqueues status jobs so that a message has at most one job waiting."""

    queue: Queue

    def enqueue(self, message_id: str) -> Outcome:
        """Queue the status job of ``message_id`` unless one is already waiting for it."""
        from jobs.status import check_message_status

        primary = job_id(message_id)
        try:
            self._enqueue(check_message_status, message_id, primary)
            return "enqueued"
        except DuplicateJobError:
            pass
        job = self._fetch(primary)
        status = job.get_status(refresh=False) if job else None
        if job is not None and status == JobStatus.SCHEDULED and self._overdue(job):
            return self._release_overdue(job, message_id)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            return "waiting"
        if job is not None and status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            if job.meta.get(FINAL):
                return "failed"  # left for `msgstatus requeue --failed`, not retried in a storm
            # RQ failed it without the job deciding so: its worker died mid-job. Run it again.
            job.delete()
            try:
                self._enqueue(check_message_status, message_id, primary)
                return "enqueued"
            except DuplicateJobError:
                return "waiting"
        # The job is running and may have looked before this event: one follow-up
        # run after it (the claim makes a second run harmless).
        try:
            self._enqueue(check_message_status, message_id, f"{primary}-again")
            return "follow-up"
        except DuplicateJobError:
            return "waiting"

    def _enqueue(self, func: Callable[..., Any], message_id: str, jid: str) -> None:
        self.queue.enqueue(
            func,
            message_id,
            job_id=jid,
            unique=True,
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            description=f"delivery status of message {message_id}",
        )

    def _overdue(self, job: Job) -> bool:
        try:
            due = self.queue.scheduled_job_registry.get_scheduled_time(job)
        except NoSuchJobError:  # moved by RQ's scheduler meanwhile
            return False
        return (datetime.now(UTC) - due).total_seconds() > OVERDUE_RETRY

    def _release_overdue(self, job: Job, message_id: str) -> Outcome:
        if not release_now(self.queue, job.id):
            return "waiting"
        log.warning("message %s: its retry was due over %ds ago and no RQ scheduler moved it; enqueued now",
                    message_id, OVERDUE_RETRY)
        return "enqueued"

    def _fetch(self, jid: str) -> Job | None:
        try:
            return Job.fetch(jid, connection=self.queue.connection)
        except Exception:  # vanished between the two calls
            return None
