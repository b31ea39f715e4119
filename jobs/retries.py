"""Retries of status jobs: the fast schedule, and the one place that moves a scheduled retry onto its queue.

A job that returns an RQ ``Retry`` waits in its queue's scheduled registry.
``move`` takes it out of the registry and enqueues it in one Redis transaction
(MULTI/EXEC, watching the job): a connection lost half-way applies nothing, and
two movers racing enqueue it once. A job whose hash says SCHEDULED while no
registry holds it (an older msgstatus lost its connection mid-move) is moved too, and
``requeue_lost`` puts back a QUEUED job that a dying worker took off its queue.
``msgstatus schedule`` moves due retries every second; a successful emit after an
outage moves them all (``jobs.wakeup``); an event or sweep finding a retry long
overdue moves it (``jobs.queueing``). Nothing else moves retries.
"""

from __future__ import annotations

import logging
import math
import time

import tenacity
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core.defaults import MAX_BACKOFF

log = logging.getLogger(__name__)

_BACKOFF = tenacity.wait_exponential(multiplier=1, min=1, max=MAX_BACKOFF)

NEXT_KEY = "msgstatus:next:"
"""Per message whose attempt failed: ``<due>:<set at>`` (Unix seconds), before which no job tries it again."""

WOKEN_KEY = "msgstatus:next:woken"
"""When a wake-up last made every waiting message due (Unix seconds): marks set before it no longer hold."""


def not_before(redis: Redis, message_id: str, due: float) -> None:
    """No job but the message's own scheduled retry tries it before ``due`` (an event's follow-up, a batch, a
    sweep would otherwise start a second retry chain, sooner than the schedule)."""
    at = time.time()
    redis.set(f"{NEXT_KEY}{message_id}", f"{due}:{at}", ex=max(1, math.ceil(due - at)) + 5)


def too_soon(redis: Redis, message_ids: list[str]) -> set[str]:
    """Those of ``message_ids`` whose next attempt is not due yet (a wake-up since makes it due)."""
    if not message_ids:
        return set()
    found = redis.mget([WOKEN_KEY, *(f"{NEXT_KEY}{mid}" for mid in message_ids)])
    woken, now = float(found[0] or 0), time.time()
    soon = set()
    for mid, raw in zip(message_ids, found[1:], strict=True):
        if raw is not None:
            due, at = (float(part) for part in _text(raw).split(":"))
            if due > now and at > woken:
                soon.add(mid)
    return soon


def woken(redis: Redis) -> None:
    """Every waiting message is due now (``jobs.wakeup``)."""
    redis.set(WOKEN_KEY, time.time())


def retry_delay(attempt: int) -> int:
    """Seconds to wait after failed attempt number ``attempt``: 1, 2, 4, 8... (tenacity's schedule)."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return round(_BACKOFF(state))


def _watched(pipe: Pipeline, connection: Redis, job_id: str) -> tuple[str | None, Queue | None]:
    """Watch the job's hash; its status and its queue, as stored now (None, None if it is gone)."""
    job_key = Job.key_for(job_id)
    pipe.watch(job_key)
    status, origin = pipe.hmget(job_key, "status", "origin")
    if origin is None:
        return None, None
    return _text(status) if status is not None else None, Queue(_text(origin), connection=connection)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def requeue_lost(connection: Redis, job_id: str) -> bool:
    """Put back a QUEUED job that waits in no queue: a worker took it off (RQ moves it to an intermediate
    list first) and died before starting it. False if it is waiting, started or gone meanwhile."""
    with connection.pipeline() as pipe:
        try:
            status, queue = _watched(pipe, connection, job_id)
            if queue is None or status != JobStatus.QUEUED.value:
                return False
            if pipe.lpos(queue.key, job_id) is not None:
                return False
            # The dying worker may have registered an execution before it fell: that entry is stale
            # (a started job says STARTED), and would later fail the job for being abandoned.
            started = queue.started_job_registry.key
            members = [m.decode() if isinstance(m, bytes) else str(m) for m in pipe.zrange(started, 0, -1)]
            stale = [m for m in members if m.split(":", 1)[0] == job_id]
            pipe.multi()
            pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            if stale:
                pipe.zrem(started, *stale)
            pipe.rpush(queue.key, job_id)
            pipe.execute()
        except WatchError:
            return False
    log.warning("job %s was QUEUED in no queue (its worker died taking it); queued again", job_id)
    return True


def move(connection: Redis, job_id: str) -> bool:
    """Enqueue a scheduled (or orphaned SCHEDULED) job now; False if it is neither (someone moved it)."""
    with connection.pipeline() as pipe:
        for _ in range(5):
            try:
                status, queue = _watched(pipe, connection, job_id)
                if queue is None:
                    return False
                registry = queue.scheduled_job_registry
                in_registry = pipe.zscore(registry.key, job_id) is not None
                if not in_registry and status != JobStatus.SCHEDULED.value:
                    return False
                try:
                    job = Job.fetch(job_id, connection=connection)
                except NoSuchJobError:
                    return False
                pipe.multi()
                pipe.zrem(registry.key, job_id)
                queue._enqueue_job(job, pipeline=pipe, at_front=job.should_enqueue_at_front())
                pipe.execute()
                if not in_registry:
                    log.warning("job %s was SCHEDULED in no registry (orphaned); enqueued now", job_id)
                return True
            except WatchError:
                continue  # the job changed meanwhile: look again
    return False


def move_due(queue: Queue) -> int:
    """Enqueue every scheduled job of ``queue`` whose time has come; how many."""
    due = queue.scheduled_job_registry.get_jobs_to_schedule(int(time.time()))
    return sum(move(queue.connection, job_id) for job_id in due)


def move_all(queue: Queue) -> int:
    """Enqueue every scheduled job of ``queue`` now; how many."""
    return sum(move(queue.connection, job_id) for job_id in queue.scheduled_job_registry.get_job_ids())
