"""The status job: claim a message, find its communication log, decide it and emit, in one transaction."""

from __future__ import annotations

import logging
import time
from typing import Literal

import tenacity
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from rq import Retry, get_current_job

from jobs import context, messages, wakeup
from jobs.emit import emit_update
from jobs.errors import BadMessage, PermanentError, RetryableError, SocketUnavailable
from jobs.queueing import FINAL, retry_delay, status_queue
from msgstatus import counters
from msgstatus.defaults import MAX_ATTEMPTS

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "failed", "waiting", "skipped"]

LEASE_PATIENCE = 2.0
"""Seconds a job waits for another worker's claim on its message to end before it skips."""


def check_message_status(message_id: str) -> Outcome | Retry:
    """RQ job: decide one message from its communication log and tell the socket service.

    Returns what happened, or an RQ ``Retry`` to run again after a backoff when
    something that may pass failed; raises when retrying cannot help or after
    the last attempt, so that RQ's failed registry holds the reason.
    """
    res = context.resources()
    try:
        oid = ObjectId(message_id)
    except (InvalidId, TypeError):
        _final()
        raise BadMessage(f"message id {message_id!r} is not an ObjectId") from None
    started = time.monotonic()
    lease = _claim(oid)
    if not isinstance(lease, messages.Claim):
        log.debug("message %s: %s, skipped", message_id,
                  "claimed by another worker" if lease == messages.LEASED else "decided or not tracked")
        counters.incr(res.redis, "jobs_skipped")
        return "skipped"
    if lease.expired:
        counters.incr(res.redis, "claims_expired")
        log.warning("message %s: took over a claim whose lease had run out (a worker died?)", message_id)
    token = lease.token
    try:
        outcome = _decide_and_emit(oid, token)
    except RetryableError as error:
        messages.release(res.db, oid, token)
        if isinstance(error, SocketUnavailable):
            wakeup.emit_failed(res.redis)
        return _retry_or_give_up(message_id, error)
    except PyMongoError as error:
        messages.release(res.db, oid, token)
        if _transient(error):
            return _retry_or_give_up(message_id, RetryableError(f"database: {error}"))
        counters.incr(res.redis, "jobs_failed")
        _final()
        raise PermanentError(f"message {message_id}: database refused the update: {error}") from error
    except BaseException:
        counters.incr(res.redis, "jobs_failed")
        messages.release(res.db, oid, token)
        _final()
        raise
    counters.incr(res.redis, f"jobs_{outcome}")
    if outcome in ("delivered", "failed"):
        wakeup.emit_succeeded(res.redis, status_queue(res.redis))
    log.info("message %s: %s in %.0f ms", message_id, outcome, (time.monotonic() - started) * 1000)
    return outcome


def _claim(oid: ObjectId) -> messages.Claim | str | None:
    """Claim the message, waiting briefly while another worker holds it.

    The usual holder is the job of the message's own insert event, about to find
    no log and release the claim just as the log's job starts: waiting a moment
    lets the log's job decide the message instead of leaving it to the next sweep.
    """
    res = context.resources()
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(LEASE_PATIENCE),
        wait=tenacity.wait_fixed(0.05),
        retry=tenacity.retry_if_result(lambda lease: lease == messages.LEASED),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    return retrying(messages.claim, res.db, oid, res.settings.claim_ttl)


def _decide_and_emit(oid: ObjectId, token: str) -> Outcome:
    res = context.resources()
    communication = messages.communication_for(res.db, oid)
    if communication is None:
        # The provider's callback has not arrived; its insert brings the message back.
        messages.release(res.db, oid, token)
        return "waiting"
    account_id = communication.get("account_id")
    if account_id is None:
        raise BadMessage(f"communication {communication['_id']} for message {oid} has no account_id")
    socket = res.settings.require_socket()
    with res.client.start_session() as session, session.start_transaction():
        updated = messages.decide(res.db, oid, token, communication, session)
        if updated is None:
            session.abort_transaction()
            return "skipped"  # our lease ran out and another worker took the message
        if updated.get("sender_id") is None:
            raise BadMessage(f"message {oid} has no sender_id: no conversation to notify")
        # Emit before commit, as the seed does: a failed emit leaves the message undecided.
        emit_update(res.http, socket, updated, str(account_id), res.settings.app_secret)
    counters.observe_latency(res.redis, (messages.now() - messages.inserted_at(communication)).total_seconds())
    return "delivered" if updated["delivered"] else "failed"


def _final() -> None:
    """Mark this job's failure as its own conclusion, so that sweeps leave it to an operator."""
    job = get_current_job()
    if job is not None:
        job.meta[FINAL] = True
        job.save_meta()


def _transient(error: PyMongoError) -> bool:
    if isinstance(error, ConnectionFailure):
        return True
    return isinstance(error, OperationFailure) and (
        error.has_error_label("TransientTransactionError") or error.code in {112, 189, 91, 11600, 11602}
    )


def _retry_or_give_up(message_id: str, error: Exception) -> Retry:
    job = get_current_job()
    redis = context.resources().redis
    attempt = (job.number_of_retries or 0) + 1 if job else MAX_ATTEMPTS
    if attempt >= MAX_ATTEMPTS:
        counters.incr(redis, "jobs_failed")
        _final()
        raise RetryableError(f"message {message_id}: gave up after {attempt} attempts: {error}") from error
    counters.incr(redis, "jobs_retried")
    delay = retry_delay(attempt)
    log.warning("message %s: attempt %d failed (%s), retrying in %ds", message_id, attempt, error, delay)
    return Retry(max=MAX_ATTEMPTS - 1, interval=delay)

