"""Putting status jobs on the queue: one job id per message, so that a message never waits twice."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from core.defaults import LEGACY_QUEUES, QUEUE
from jobs import messages, retries
from jobs.errors import describe

log = logging.getLogger(__name__)

JOB_FUNCTION = "jobs.status.check_message_status"
"""The status job of one message, by name: RQ imports it in the worker."""

BATCH_FUNCTION = "jobs.batch.check_messages"
"""The status job of messages that arrived together."""

BATCH_SIZE = 50
"""Messages one batch job decides at most."""

MARK_PREFIX = "msgstatus:batched:"
"""Per message: the id of the batch job it waits in, so that it never waits twice."""

MARK_TTL = 3600
"""Seconds a batch mark lives at most (a batch job starts long before; a lost one is seen as stale)."""

FINAL = "msgstatus_final"
"""Job meta flag: the job itself concluded that it failed (as opposed to dying with its worker)."""

LAST_ERROR = "msgstatus_last_error"
"""Job meta: why the job's last attempt failed (for ``msgstatus explain``)."""

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


def follow_up_id(message_id: str) -> str:
    """The job id of the one run queued after a message's running job, for an event it may have missed."""
    return f"{job_id(message_id)}-again"


def note_error(job: Job, error: BaseException) -> None:
    """Leave why an attempt failed in the job's meta (saved with the job, or by ``save_meta``)."""
    job.meta[LAST_ERROR] = describe(error)[: messages.ERROR_SHOWN]


def mark(message_id: str) -> str:
    return f"{MARK_PREFIX}{message_id}"


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
        if job is not None and status == JobStatus.QUEUED and self._requeue_if_lost(job):
            return "enqueued"
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
        again = follow_up_id(message_id)
        try:
            self._enqueue(message_id, again)
            return "follow-up"
        except DuplicateJobError:
            pass
        follow_up = self._fetch(again)
        if follow_up is not None and follow_up.get_status(refresh=False) == JobStatus.QUEUED and \
                self._requeue_if_lost(follow_up):
            return "follow-up"
        return "waiting"

    def requeue(self, message_id: str) -> None:
        """A fresh job for a message an operator unparked: a failed job of its own, if RQ still keeps one,
        gives way (RQ's failed registry forgets failed jobs after FAILURE_TTL; MongoDB does not)."""
        for jid in (job_id(message_id), follow_up_id(message_id)):
            job = self._fetch(jid)
            if job is not None and job.get_status(refresh=False) == JobStatus.FAILED:
                job.delete()
        self.enqueue(message_id)

    def enqueue_many(self, message_ids: Sequence[str]) -> Counter[str]:
        """Queue the messages, arrived together, in batch jobs of up to BATCH_SIZE; what happened to each.

        A message that has a job of its own (a retry, a failure, a run) or is alone goes through
        ``enqueue``; one already marked in a waiting batch job is "waiting".
        """
        outcomes: Counter[str] = Counter()
        ids = list(dict.fromkeys(message_ids))
        if len(ids) < 2:
            outcomes.update(self.enqueue(mid) for mid in ids)
            return outcomes
        connection = self.queue.connection
        with connection.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.exists(Job.key_for(job_id(mid)))
            for mid in ids:
                pipe.get(mark(mid))
            found = pipe.execute()
        own, marks = found[: len(ids)], found[len(ids):]
        outcomes.update(self.enqueue(mid) for mid, has_job in zip(ids, own, strict=True) if has_job)
        free = [(mid, m) for mid, has_job, m in zip(ids, own, marks, strict=True) if not has_job]
        waiting = self._waiting_batches({m for _, m in free if m})
        if marked := sum(1 for _, m in free if m in waiting):
            outcomes["waiting"] += marked
        batchable = [mid for mid, m in free if m not in waiting]
        for start in range(0, len(batchable), BATCH_SIZE):
            chunk = batchable[start:start + BATCH_SIZE]
            if len(chunk) == 1:
                outcomes[self.enqueue(chunk[0])] += 1
                continue
            outcomes["enqueued"] += self._enqueue_batch(chunk)
        return outcomes

    def _waiting_batches(self, batch_ids: set[bytes]) -> set[bytes]:
        """Those batch jobs that still wait in the queue (a mark naming any other is stale, and so is one
        naming a job a dying worker took off the queue)."""
        if not batch_ids:
            return set()
        ordered = list(batch_ids)
        with self.queue.connection.pipeline(transaction=False) as pipe:
            for bid in ordered:
                pipe.hget(Job.key_for(bid.decode()), "status")
                pipe.lpos(self.queue.key, bid.decode())
            found = pipe.execute()
        return {bid for bid, status, place in zip(ordered, found[::2], found[1::2], strict=True)
                if status == b"queued" and place is not None}

    def _enqueue_batch(self, message_ids: list[str]) -> int:
        bid = f"batch-{uuid.uuid4().hex}"
        with self.queue.connection.pipeline(transaction=False) as pipe:
            for mid in message_ids:
                pipe.set(mark(mid), bid, ex=MARK_TTL)
            pipe.execute()
        self.queue.enqueue(
            BATCH_FUNCTION, message_ids, job_id=bid, result_ttl=0, failure_ttl=FAILURE_TTL,
            description=f"delivery status of {len(message_ids)} messages",
        )
        return len(message_ids)

    def schedule_retry(self, message_id: str, attempts_made: int, delay: int, error: BaseException) -> None:
        """Give a message its own job, to run in ``delay`` seconds as attempt ``attempts_made + 1``."""
        job = self.queue.create_job(
            JOB_FUNCTION, args=(message_id,), job_id=job_id(message_id), result_ttl=0, failure_ttl=FAILURE_TTL,
            description=f"delivery status of message {message_id}",
        )
        job.number_of_retries = attempts_made
        note_error(job, error)
        with contextlib.suppress(DuplicateJobError):  # it has a job of its own already, which will run
            self.queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay), unique=True)

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

    def _requeue_if_lost(self, job: Job) -> bool:
        """Put a QUEUED job back on its queue if a dying worker took it off long enough ago."""
        return self._abandoned_in_queue(job) and retries.requeue_lost(self.queue.connection, job.id)

    @staticmethod
    def _abandoned_in_queue(job: Job) -> bool:
        """Queued long enough ago that it should have started, if it is no longer in its queue."""
        queued = job.enqueued_at
        if queued is None:
            return False
        return (datetime.now(UTC) - messages.as_utc(queued)).total_seconds() > OVERDUE_RETRY

    def _fetch(self, jid: str) -> Job | None:
        try:
            return Job.fetch(jid, connection=self.queue.connection)
        except Exception:  # vanished between the two calls
            return None
