"""After an outage: once attempts succeed again, every waiting message comes back at once.

Fast retries back off for up to MAX_BACKOFF seconds and slow retries wait
``slow_retry`` seconds, so without this a message would wait that long after the
socket service (or the database) is back. A decision that succeeds once no attempt
has failed for QUIET seconds moves every scheduled retry onto the queue, makes
every slow retry due and asks for a sweep, which enqueues those a batch at a time:
at most once every WAKE_INTERVAL seconds. A success amid failures (a socket
service shedding part of its load) wakes nothing: each message then keeps its own
backoff, and the struggling service gets no more than those schedules send it.
"""

from __future__ import annotations

import contextlib
import logging

from pymongo.database import Database
from pymongo.errors import PyMongoError
from redis import Redis
from redis.exceptions import RedisError

from jobs import budget, messages, queueing, retries, sweep
from jobs.budget import RECENT_KEY

log = logging.getLogger(__name__)

FAILING_KEY = "msgstatus:outside:failing"
"""Set while attempts fail for outside causes, until a wake-up clears it."""

WOKEN_KEY = "msgstatus:outside:woken"
"""Held for WAKE_INTERVAL seconds by the worker that last woke the waiting messages."""

WAKE_INTERVAL = 10
"""Seconds between two wake-ups at most."""

FAILING_TTL = 24 * 3600
"""A failure mark older than this is forgotten (the slow retries have run many times by then)."""


def failed(redis: Redis, first_attempt: bool = False) -> None:
    """Remember that an attempt (a message's first, or a retry) failed for an outside cause (Redis itself may
    be that cause)."""
    with contextlib.suppress(RedisError), redis.pipeline(transaction=False) as pipe:
        pipe.set(FAILING_KEY, "1", ex=FAILING_TTL)
        budget.note_failure(pipe)
        budget.earn(pipe, int(first_attempt))
        pipe.execute()


def succeeded(redis: Redis, db: Database, first_attempts: int = 0) -> int:  # type: ignore[type-arg]
    """After an outage that has ended (no failure for QUIET seconds): enqueue every scheduled retry and make
    slow retries due; how many were woken. ``first_attempts``: how many of the successes were messages'
    first attempts, which earn the retry budget while failures go on.

    Called after a decision is committed, so it never raises: a wake-up that Redis or the database
    cannot take now is left to the retries' own schedule and the sweeps.
    """
    try:
        with redis.pipeline(transaction=False) as pipe:  # one round trip per successful job
            pipe.exists(FAILING_KEY)
            pipe.exists(RECENT_KEY)
            failing, recent = pipe.execute()
        if recent and first_attempts:
            with redis.pipeline(transaction=False) as pipe:
                budget.earn(pipe, first_attempts)
                pipe.execute()
        if not failing or recent:  # no outage, or its failures go on
            return 0
        if not redis.set(WOKEN_KEY, "1", nx=True, ex=WAKE_INTERVAL):
            return 0
        redis.delete(FAILING_KEY)
        retries.woken(redis)
        moved = sum(retries.move_all(queue) for queue in queueing.status_queues(redis))
        due = messages.wake(db, messages.now())
        if due:
            sweep.sweep_soon(redis)
    except (RedisError, PyMongoError) as error:
        log.warning("waking the waiting messages failed (%s); their retries and the sweeps bring them", error)
        return 0
    log.info("attempts succeed again: %d scheduled retries enqueued now, %d slow retries due now", moved, due)
    return moved + due
