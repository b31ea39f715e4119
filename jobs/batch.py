"""The status job of messages that arrived together: claims and log lookups for the lot, emits at once.

Every per-message promise of ``jobs.status`` holds inside a batch: each message is
claimed on its own lease; each decision is its own transaction, emitted before
its commit; the decisions run side by side over one pooled HTTP client, so one
message's failed or slow emit neither rolls back, retries nor holds up another.
What is not plain sailing leaves the batch for a job of its own: a message another
live job holds, or whose data turns out bad, is handed to its own job at once (which
waits for the claim, or parks the message, as ``jobs.status`` does); a message whose
attempt failed from outside gets its own job for the next attempt, on the same
fast-then-slow schedule.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from redis.exceptions import RedisError

from core import metrics
from core.defaults import EMIT_TIMEOUT
from jobs import context, messages, wakeup
from jobs.errors import BadMessage
from jobs.queueing import Enqueuer, mark, status_queue
from jobs.retries import too_soon
from jobs.status import (
    after_outside_failure,
    count_outcome,
    decide_and_emit,
    notice_late_change,
    release_quietly,
    spend_on_retry,
)

log = logging.getLogger(__name__)

CONCURRENCY = 8
"""Decisions (each a transaction and an emit) one worker process runs side by side."""

ATTEMPT_TIME = EMIT_TIMEOUT + 5.0
"""Seconds one decision may take at most (its emit's timeout, the lookups, the commit): a batch starts none
on a lease with less than this left, and hands the message to a job of its own instead."""

COUNTED = frozenset({"delivered", "undelivered", "waiting", "skipped"})
"""Outcomes this job counts itself."""

_pool: tuple[int, ThreadPoolExecutor] | None = None


def check_messages(message_ids: list[str]) -> dict[str, int]:
    """RQ job: decide every message of ``message_ids`` that has its communication log; what happened, counted."""
    res = context.resources()
    started = time.monotonic()
    enqueuer = Enqueuer(status_queue(res.redis))
    try:  # no longer waiting: an event from now on gets a job (the claims keep it harmless)
        res.redis.delete(*(mark(mid) for mid in message_ids))
    except RedisError as error:
        log.warning("batch of %d: could not clear its marks (%s); they expire by themselves", len(message_ids), error)
    oids, handed = [], Counter[str]()
    for mid in message_ids:
        try:
            oids.append(ObjectId(mid))
        except (InvalidId, TypeError):
            handed[enqueuer.enqueue(mid)] += 1  # its own job fails it, named
    token = messages.new_token()
    outcomes: Counter[str] = Counter()
    res.leases.hold(token)
    # Behind a slow socket service the last decisions start late: none may start on a lease about to end
    starts_by = time.monotonic() + res.settings.claim_ttl - ATTEMPT_TIME
    try:
        held = messages.claim_many(res.db, oids, token, res.settings.claim_ttl)
        others = [oid for oid in oids if oid not in held]
        tracked = messages.tracked_among(res.db, others)
        for oid in tracked:
            handed[enqueuer.enqueue(str(oid))] += 1  # another job holds it (live or dead): its own job sees
        for oid in set(others) - set(tracked):  # decided (or never tracked): its log may have changed since
            notice_late_change(oid)
        try:  # a message whose last attempt failed keeps its own retry's schedule
            soon = {ObjectId(mid) for mid in too_soon(res.redis, [str(oid) for oid in held])}
        except RedisError:
            soon = set()
        messages.release_many(res.db, list(soon), token)
        outcomes["retry-pending"] = len(soon)
        held = {oid: hold for oid, hold in held.items() if oid not in soon}
        logs = messages.communications_for(res.db, list(held))
        waiting = [oid for oid in held if oid not in logs]
        messages.release_many(res.db, waiting, token)
        outcomes["waiting"] = len(waiting)
        deciding = [oid for oid in held if oid in logs]
        decided = list(_pool_here().map(lambda oid: _one(enqueuer, oid, token, logs[oid], held[oid], starts_by),
                                        deciding))
        outcomes.update(decided)
        first = sum(outcome in ("delivered", "undelivered") and not messages.waits_for_slow_retry(held[oid])
                    for oid, outcome in zip(deciding, decided, strict=True))
    finally:
        res.leases.drop(token)
    with metrics.counting(res.redis) as pipe:
        for outcome, count in outcomes.items():
            if outcome in COUNTED:  # the rest is counted where it is decided
                count_outcome(pipe, outcome, count)
        metrics.BATCHES.inc(pipe)
        metrics.BATCHED.inc(pipe, len(message_ids))
    if outcomes["delivered"] or outcomes["undelivered"]:
        wakeup.succeeded(res.redis, res.db, first_attempts=first)
    log.info("batch of %d: %s in %.0f ms", len(message_ids), dict(outcomes + handed),
             (time.monotonic() - started) * 1000)
    return dict(outcomes + handed)


def _one(
    enqueuer: Enqueuer, oid: ObjectId, token: str, communication: dict[str, Any], hold: Any, starts_by: float,
) -> str:
    """One message's decision, or where it goes instead; never raises."""
    if time.monotonic() > starts_by:  # its own job claims it afresh, with a whole lease for its attempt
        release_quietly(oid, token)
        enqueuer.enqueue(str(oid))
        return "handed-off"
    slow = messages.waits_for_slow_retry(hold)
    try:
        if slow:
            spend_on_retry(oid)
        return decide_and_emit(oid, token, communication)
    except BadMessage:
        release_quietly(oid, token)
        enqueuer.enqueue(str(oid))  # its own job parks it and fails, named in the failed registry
        return "handed-off"
    except Exception as error:  # outside the message: its next attempt is a job of its own
        try:  # arranged before the claim goes: no other job may slip in before it
            delay = after_outside_failure(str(oid), oid, token, slow, 1, error)
            if delay is None:
                return "held"
            enqueuer.schedule_retry(str(oid), 1, delay, error)
        except Exception:  # the database or Redis is away too: the next sweep finds it
            log.warning("message %s: its next attempt could not be arranged; the next sweep finds it", oid)
            return "lost-to-sweep"
        finally:
            release_quietly(oid, token)
        return "retried"


def _pool_here() -> ThreadPoolExecutor:
    """This process's pool (a forked work horse makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="msgstatus-decide"))
    return _pool[1]
