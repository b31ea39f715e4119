"""After an outage: the first successful emit brings every waiting message back at once.

Fast retries back off for up to MAX_BACKOFF seconds and slow retries wait
``slow_retry`` seconds, so without this a message would wait that long after the
socket service (or the database) is back. The first decision that succeeds after
a failed attempt moves every scheduled retry onto the queue, makes every slow
retry due now and asks for a sweep, which enqueues those a batch at a time: at
most once every WAKE_INTERVAL seconds, so a flapping service costs each waiting
message at most one extra attempt per interval, never a storm.
"""

from __future__ import annotations

import contextlib
import logging

from pymongo.database import Database
from pymongo.errors import PyMongoError
from redis import Redis
from redis.exceptions import RedisError

from jobs import messages, queueing, retries, sweep

log = logging.getLogger(__name__)

FAILING_KEY = "msgstatus:outside:failing"
"""Set while attempts fail for outside causes; its presence is what a success checks (one EXISTS per job)."""

WOKEN_KEY = "msgstatus:outside:woken"
"""Held for WAKE_INTERVAL seconds by the worker that last woke the waiting messages."""

WAKE_INTERVAL = 10
"""Seconds between two wake-ups at most."""

FAILING_TTL = 24 * 3600
"""A failure mark older than this is forgotten (the slow retries have run many times by then)."""


def failed(redis: Redis) -> None:
    """Remember that an attempt failed for an outside cause (Redis itself may be that cause)."""
    with contextlib.suppress(RedisError):
        redis.set(FAILING_KEY, "1", ex=FAILING_TTL)


def succeeded(redis: Redis, db: Database) -> int:  # type: ignore[type-arg]
    """After a failure: enqueue every scheduled retry and make slow retries due; how many were woken.

    Called after a decision is committed, so it never raises: a wake-up that Redis or the database
    cannot take now is left to the retries' own schedule and the sweeps.
    """
    try:
        if not redis.exists(FAILING_KEY) or not redis.set(WOKEN_KEY, "1", nx=True, ex=WAKE_INTERVAL):
            return 0
        redis.delete(FAILING_KEY)
        moved = sum(retries.move_all(queue) for queue in queueing.status_queues(redis))
        due = messages.wake(db, messages.now())
        if due:
            sweep.sweep_soon(redis)
    except (RedisError, PyMongoError) as error:
        log.warning("waking the waiting messages failed (%s); their retries and the sweeps bring them", error)
        return 0
    log.info("attempts succeed again: %d scheduled retries enqueued now, %d slow retries due now", moved, due)
    return moved + due
