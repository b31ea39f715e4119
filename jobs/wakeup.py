"""Moving retries back onto the queue: when they are due, and early once the socket service is back.

RQ moves due retries with a scheduler inside one worker, holding a lock that
outlives a killed worker by 61 s and that a Redis restart loses; ``msgstatus
schedule`` moves them too (``release_due``, every second), so retries run on
time whatever happened to the workers.

After an outage of a minute, retries still back off for up to 64 s more. The
first emit that succeeds after a failed one moves them all back onto the queue:
at most once every WAKE_INTERVAL seconds, so a flapping service costs each
waiting message at most one extra attempt per interval, never a storm.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

log = logging.getLogger(__name__)

FAILING_KEY = "msgstatus:socket:failing"
"""Set while emits fail; its presence is what a successful emit checks (one EXISTS per job)."""

WOKEN_KEY = "msgstatus:socket:woken"
"""Held for WAKE_INTERVAL seconds by the worker that last woke the retries."""

WAKE_INTERVAL = 10
"""Seconds between two wake-ups at most."""

FAILING_TTL = 3600
"""A failure mark older than this is forgotten (every retry has run by then)."""


def emit_failed(redis: Redis) -> None:
    """Remember that the socket service is failing."""
    redis.set(FAILING_KEY, "1", ex=FAILING_TTL)


def emit_succeeded(redis: Redis, queue: Queue) -> int:
    """After a failure: enqueue every scheduled status retry now; how many were woken."""
    if not redis.exists(FAILING_KEY) or not redis.set(WOKEN_KEY, "1", nx=True, ex=WAKE_INTERVAL):
        return 0
    redis.delete(FAILING_KEY)
    woken = sum(release_now(queue, job_id) for job_id in queue.scheduled_job_registry.get_job_ids())
    log.info("the socket service answers again: %d waiting retries enqueued now", woken)
    return woken


def release_due(queue: Queue) -> int:
    """Enqueue every scheduled job of ``queue`` whose time has come; how many."""
    due = queue.scheduled_job_registry.get_jobs_to_schedule(int(time.time()))
    return sum(release_now(queue, job_id) for job_id in due)


def release_now(queue: Queue, job_id: str) -> bool:
    """Move one scheduled job onto the queue; False if someone (RQ's scheduler, a sweep) moved it first."""
    # Only whoever takes it out of the registry enqueues it: one run, not two.
    if not queue.scheduled_job_registry.remove(job_id):
        return False
    try:
        queue.enqueue_job(Job.fetch(job_id, connection=queue.connection))
    except NoSuchJobError:
        return False
    return True
