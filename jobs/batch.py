"""The status job of messages that arrived together: claims and log lookups for the lot, emits at once,
decisions committed in waves.

Every per-message promise of ``jobs.status`` holds inside a batch: each message is
claimed on its own lease and emitted before the commit that decides it; the emits
run side by side over one pooled HTTP client, and the decisions whose emits have
returned are committed together, one transaction (one bulk update) per wave, so
one message's failed or slow emit neither rolls back, retries nor holds up another.
A wave whose commit fails leaves its messages emitted but undecided: each is tried
again on its own (the same idempotency key), as after a worker's death. What is
not plain sailing leaves the batch for a job of its own: a message another live job
holds, or whose data turns out bad, is handed to its own job at once (which waits
for the claim, or parks the message, as ``jobs.status`` does); a message whose
attempt failed from outside gets its own job for the next attempt, on the same
fast-then-slow schedule.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from redis.exceptions import RedisError

from core import metrics
from core.defaults import EMIT_TIMEOUT
from jobs import context, messages, seenlogs, wakeup
from jobs.decisions import Decision, commit_wave, emitted, observe_emitted
from jobs.errors import BadMessage
from jobs.queueing import Enqueuer, mark, status_queue
from jobs.retries import too_soon
from jobs.status import (
    after_outside_failure,
    count_outcome,
    notice_late_change,
    release_quietly,
    spend_on_retry,
)

log = logging.getLogger(__name__)

CONCURRENCY = 8
"""Decisions (each an emit, then its place in a wave's commit) one worker process runs side by side."""

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
        held = {oid: doc for oid, doc in held.items() if oid not in soon}
        logs = seenlogs.logs_for(res.db, res.redis, list(held))
        waiting = [oid for oid in held if oid not in logs]
        messages.release_many(res.db, waiting, token)
        outcomes["waiting"] = len(waiting)
        decided = _decide_in_waves(enqueuer, token, {oid: held[oid] for oid in held if oid in logs}, logs, starts_by)
        outcomes.update(decided.values())
        first = sum(outcome in ("delivered", "undelivered") and not _slow(held[oid])
                    for oid, outcome in decided.items())
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


def _slow(message: dict[str, Any]) -> bool:
    return messages.waits_for_slow_retry(message.get(messages.HOLD))


def _decide_in_waves(
    enqueuer: Enqueuer, token: str, held: dict[ObjectId, dict[str, Any]], logs: dict[ObjectId, dict[str, Any]],
    starts_by: float,
) -> dict[ObjectId, str]:
    """Emit the decisions side by side; commit the ones whose emits have returned, together, as they return.

    Each message is emitted before the commit that decides it; a failed emit leaves only its own message
    undecided; a slow one holds up neither its neighbours' emits nor their commits (the next wave goes
    without it). A message's place goes to the next one only once its wave is committed, so at most
    CONCURRENCY messages are ever emitted and undecided: all that a killed worker can leave to be emitted
    again. What happened to each message.
    """
    outcomes: dict[ObjectId, str] = {}
    waiting = iter(held)
    pending: dict[Future[Decision | str], ObjectId] = {}

    def fill() -> None:
        while len(pending) < CONCURRENCY and (oid := next(waiting, None)) is not None:
            pending[_pool_here().submit(_emit, enqueuer, oid, token, held[oid], logs[oid], starts_by)] = oid

    fill()
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        wave = []
        for future in done:
            oid = pending.pop(future)
            result = future.result()
            if isinstance(result, Decision):
                wave.append(result)
            else:
                outcomes[oid] = result
        if wave:
            outcomes.update(_commit(enqueuer, token, wave, held, logs))
        fill()
    return outcomes


def _emit(
    enqueuer: Enqueuer, oid: ObjectId, token: str, message: dict[str, Any], communication: dict[str, Any],
    starts_by: float,
) -> Decision | str:
    """One message's decision, emitted, for the next wave's commit; or where it went instead. Never raises."""
    if time.monotonic() > starts_by:  # its own job claims it afresh, with a whole lease for its attempt
        release_quietly(oid, token)
        enqueuer.enqueue(str(oid))
        return "handed-off"
    slow = _slow(message)
    try:
        if slow:
            spend_on_retry(oid)
        return emitted(oid, token, message, communication)
    except BadMessage:
        release_quietly(oid, token)
        enqueuer.enqueue(str(oid))  # its own job parks it and fails, named in the failed registry
        return "handed-off"
    except Exception as error:  # outside the message: its next attempt is a job of its own
        return _after_failure(enqueuer, oid, token, slow, error)


def _commit(
    enqueuer: Enqueuer, token: str, wave: list[Decision], held: dict[ObjectId, dict[str, Any]],
    logs: dict[ObjectId, dict[str, Any]],
) -> dict[ObjectId, str]:
    """Commit a wave of emitted decisions in one transaction; what happened to each."""
    res = context.resources()
    try:
        matched = commit_wave(res.client, res.db, wave)
    except Exception as error:  # each message of the wave was emitted undecided: it is tried again on its own
        log.warning("batch: a wave of %d decisions was not committed (%s)", len(wave), error)
        return {d.message_id: _after_failure(enqueuer, d.message_id, token, _slow(held[d.message_id]), error)
                for d in wave}
    outcomes = {d.message_id: "delivered" if d.after["delivered"] else "undelivered" for d in wave}
    if matched < len(wave):  # a lease lost, or a metadata that changed shape since it was read
        for doc in res.db[messages.MESSAGES].find({"_id": {"$in": list(outcomes)}, **messages.TRACKED},
                                                  {f"{messages.CLAIM}.token": 1}):
            oid = doc["_id"]
            if (doc.get(messages.CLAIM) or {}).get("token") == token:
                release_quietly(oid, token)
                enqueuer.enqueue(str(oid))  # its own job decides it from the message as it is now
                outcomes[oid] = "handed-off"
            else:
                outcomes[oid] = "skipped"  # another worker took it over
    for d in wave:
        if outcomes[d.message_id] in ("delivered", "undelivered"):
            observe_emitted(logs[d.message_id])
    return outcomes


def _after_failure(enqueuer: Enqueuer, oid: ObjectId, token: str, slow: bool, error: Exception) -> str:
    """A message whose attempt failed from outside: its next attempt arranged (a job of its own), its claim
    released."""
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
