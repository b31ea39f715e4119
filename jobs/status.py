"""The status job: claim a message, find its communication log, emit its decision, then write it.

What happens after a failure depends on where its cause lies. Bad data in the
message or its log (``errors.BadMessage``) parks the message for an operator:
the job fails for good, named in RQ's failed registry, and sweeps leave it
alone. Anything else (the socket service down or refusing us, the database, a
bug) is retried: first on tenacity's fast schedule, then, once
``fast_attempts`` have failed, every ``slow_retry`` seconds for as long as it
takes, and at once after the next successful emit (``jobs.wakeup``). A job
stopped from outside (a timeout, a shutdown, a killed worker) is run again by
the next event or sweep.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import Any, Literal

import tenacity
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from rq import Retry, get_current_job
from rq.timeouts import JobTimeoutException

from core import metrics
from jobs import budget, communications, context, leases, messages, seenlogs, wakeup
from jobs.decisions import decide_and_emit
from jobs.errors import BadMessage, RetryableError, Shed, describe
from jobs.queueing import FINAL, job_id, note_error
from jobs.retries import not_before, retry_delay, too_soon

log = logging.getLogger(__name__)

EXPECTED = (RetryableError, PyMongoError, RedisError, OSError, JobTimeoutException)
"""Failures expected from outside the message; any other is logged with its traceback too."""

Outcome = Literal["delivered", "undelivered", "waiting", "skipped", "held"]

LATE_KEY = "msgstatus:late:"
"""Per decided message whose log came to say otherwise: what was last noticed (``<log id>:<delivered>``)."""

LATE_TTL = 30 * 24 * 3600
"""Seconds a noticed change is remembered."""

RQ_ROUNDING = 1
"""Seconds added to a fast retry's delay: RQ keeps when a retry is due in whole seconds, cut down, and would
otherwise run it up to a second before its time."""

LEASE_PATIENCE = 2.0
"""Seconds a job waits for another worker's claim on its message to end before it skips."""


def check_message_status(message_id: str) -> Outcome | Retry:
    """RQ job: decide one message from its communication log and tell the socket service.

    Returns what happened, or an RQ ``Retry`` to run again after a backoff; raises
    BadMessage (after parking the message) when only an operator can help.
    """
    res = context.resources()
    try:
        oid = ObjectId(message_id)
    except (InvalidId, TypeError):
        metrics.JOB_FAILURES.inc(res.redis, kind="bad_data")
        _final()
        raise BadMessage(f"message id {message_id!r} is not an ObjectId") from None
    _start_afresh_if_requeued(oid)
    started = time.monotonic()
    token = messages.new_token()
    lease: messages.Claim | None = None
    try:
        res.leases.hold(token)
        found = _claim(oid, token)
        if not isinstance(found, messages.Claim):
            log.debug("message %s: %s, skipped", message_id,
                      "claimed by another worker" if found == messages.LEASED else "decided or not tracked")
            metrics.NOT_DECIDED.inc(res.redis, reason="not_free")
            if found is None:
                notice_late_change(oid)
            return "skipped"
        lease = found
        if lease.taken_over:
            metrics.TAKEOVERS.inc(res.redis)
            log.warning("message %s: took over a claim whose job had died or run out", message_id)
        if not _own_retry(message_id) and _waits_for_retry(message_id):
            messages.release(res.db, oid, token)
            log.debug("message %s: its next attempt is not due yet; its own retry makes it", message_id)
            metrics.NOT_DECIDED.inc(res.redis, reason="not_free")
            return "skipped"
        outcome = _decide_and_emit(oid, lease)
    except BadMessage as error:
        metrics.JOB_FAILURES.inc(res.redis, kind="bad_data")
        with contextlib.suppress(PyMongoError):
            messages.park(res.db, oid, token, str(error))
        _final()
        raise
    except Exception as error:  # outside the message: the socket service, the database, Redis, a bug
        try:  # the next attempt is arranged before the claim goes: no other job may slip in before it
            return _later(message_id, oid, token, lease, error)
        finally:
            _release(oid, lease)
    except BaseException:  # a shutdown stops the job from outside (an RQ timeout is an Exception, above)
        _release(oid, lease)
        raise
    finally:
        res.leases.drop(token)
    count_outcome(res.redis, outcome)
    if outcome in ("delivered", "undelivered"):
        wakeup.succeeded(res.redis, res.db, first_attempts=int(not _is_retry(lease)))
    log.info("message %s: %s in %.0f ms", message_id, outcome, (time.monotonic() - started) * 1000)
    return outcome


def _own_retry(message_id: str) -> bool:
    """Whether this job is the message's own, run again by its retry schedule."""
    job = get_current_job()
    return job is not None and job.id == job_id(message_id) and bool(job.number_of_retries)


def _waits_for_retry(message_id: str) -> bool:
    try:
        return bool(too_soon(context.resources().redis, [message_id]))
    except RedisError:
        return False


def notice_late_change(oid: ObjectId) -> None:
    """A decided message whose log now says otherwise: counted once per change; the message is not touched."""
    res = context.resources()
    try:  # a note for operators, never in the way of the job (or of its batch)
        change = communications.late_change(res.db, oid)
        if change is None:
            return
        said = f"{change['communication_id']}:{change['delivered']}"
        # What was last noticed, so that the same change seen again by another event is not counted twice
        before = res.redis.set(f"{LATE_KEY}{oid}", said, ex=LATE_TTL, get=True)
    except (PyMongoError, RedisError) as error:
        log.debug("message %s: could not check its log against its decision (%s)", oid, error)
        return
    if before != said.encode():
        metrics.LATE_CHANGES.inc(res.redis)
        log.warning("message %s: its communication log %s now says delivered=%s, after the decision, which stands",
                    oid, change["communication_id"], change["delivered"])


def count_outcome(connection: Any, outcome: str, count: int = 1) -> None:
    """Count a check's outcome: a decision by its value, or why there is none."""
    if outcome in ("delivered", "undelivered"):
        metrics.DECIDED.inc(connection, count, delivered="true" if outcome == "delivered" else "false")
    elif outcome in ("waiting", "skipped"):
        metrics.NOT_DECIDED.inc(connection, count, reason="no_log" if outcome == "waiting" else "not_free")


def _claim(oid: ObjectId, token: str) -> messages.Claim | str | None:
    """Claim the message, waiting briefly while another live job holds it.

    The usual holder is the job of the message's own insert event, about to find
    no log and release the claim just as the log's job starts: waiting a moment
    lets the log's job decide the message instead of leaving it to the next sweep.
    """
    res = context.resources()

    def alive(holder: str) -> bool:
        return leases.alive(res.redis, [holder])[holder]

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(LEASE_PATIENCE),
        wait=tenacity.wait_fixed(0.05),
        retry=tenacity.retry_if_result(lambda lease: lease == messages.LEASED),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    return retrying(messages.claim, res.db, oid, token, res.settings.claim_ttl, alive)


def _decide_and_emit(oid: ObjectId, lease: messages.Claim) -> Outcome:
    res = context.resources()
    communication = seenlogs.logs_for(res.db, res.redis, [oid]).get(oid)
    if communication is None:
        # The provider's callback has not arrived; its insert brings the message back.
        messages.release(res.db, oid, lease.token)
        return "waiting"
    if _is_retry(lease):
        spend_on_retry(oid)
    return decide_and_emit(oid, lease.token, lease.message, communication)


def _is_retry(lease: messages.Claim) -> bool:
    """Whether this attempt follows a failed one: this job's retry, or the message's slow retry."""
    job = get_current_job()
    return lease.slow_retry or bool(job is not None and job.number_of_retries)


def spend_on_retry(oid: ObjectId) -> None:
    """Before a retry's emit: Shed if the socket service is failing and the retry budget is spent."""
    if not budget.allow_retry(context.resources().redis):
        raise Shed(f"not sent: the socket service is failing and the retry budget is spent (message {oid})")


def _release(oid: ObjectId, lease: messages.Claim | None) -> None:
    if lease is not None:
        release_quietly(oid, lease.token)


def release_quietly(oid: ObjectId, token: str) -> None:
    """Give the claim back if we can; if the database is away its job's end frees it (``jobs.leases``)."""
    try:
        messages.release(context.resources().db, oid, token)
    except PyMongoError as error:
        log.warning("message %s: could not release its claim (%s); it is freed as its job ends", oid, error)


def _later(
    message_id: str, oid: ObjectId, token: str, lease: messages.Claim | None, error: Exception
) -> Outcome | Retry:
    """After a failure from outside the message: a fast retry, or the message waits for its slow retry."""
    job = get_current_job()
    attempt = (job.number_of_retries or 0) + 1 if job else 1
    if job is not None:
        with contextlib.suppress(Exception):  # a note for operators; never in the way of the retry
            note_error(job, error)
            job.save_meta()
    delay = after_outside_failure(message_id, oid, token, lease is not None and lease.slow_retry, attempt, error)
    if delay is None:
        return "held"
    return Retry(max=context.resources().settings.fast_attempts, interval=delay)


def after_outside_failure(
    message_id: str, oid: ObjectId, token: str, slow: bool, attempt: int, error: Exception
) -> int | None:
    """Seconds until the fast retry of attempt ``attempt + 1``, or None: the message now waits for its slow
    retry (after a slow retry failed, or the last fast attempt). Called while we may still hold the claim
    (``token``): until the next attempt is due, no other job tries the message."""
    res = context.resources()
    reason = describe(error)
    if isinstance(error, Shed):  # no request was sent: nothing failed that could say the service is failing
        metrics.RETRIES_SHED.inc(res.redis)
    else:
        wakeup.failed(res.redis, first_attempt=attempt == 1 and not slow)
        metrics.JOB_FAILURES.inc(res.redis, kind="outside")
    if not isinstance(error, EXPECTED):
        log.error("message %s: unexpected error; retried like an outage", message_id, exc_info=error)
    # A socket service that said when to come back (Retry-After) is not asked sooner.
    asked = getattr(error, "retry_after", None) or 0
    if not slow and attempt < res.settings.fast_attempts:
        metrics.RETRIES.inc(res.redis, schedule="fast")
        wait = max(retry_delay(attempt), asked)
        _not_before(message_id, time.time() + wait)
        delay = wait + RQ_ROUNDING
        log.warning("message %s: attempt %d failed (%s), retrying in %ds", message_id, attempt, reason, delay)
        return delay
    until = messages.now() + timedelta(seconds=max(res.settings.slow_retry, asked))
    _not_before(message_id, until.timestamp())
    # If the database is away this raises: the job fails without a verdict and the next
    # event or sweep after the database is back runs it again.
    messages.hold(res.db, oid, token, until, 1 if slow else attempt, reason)
    metrics.RETRIES.inc(res.redis, schedule="slow")
    log.warning("message %s: %s failed (%s); next try in %ds, or as soon as an emit succeeds",
                message_id, "slow retry" if slow else f"all {attempt} attempts", reason, res.settings.slow_retry)
    return None


def _not_before(message_id: str, due: float) -> None:
    with contextlib.suppress(RedisError):  # without the mark, only the schedule itself spaces the attempts
        not_before(context.resources().redis, message_id, due)


def _final() -> None:
    """Mark this job's failure as its own conclusion, so that sweeps leave it to an operator."""
    job = get_current_job()
    if job is not None:
        job.meta[FINAL] = True
        job.save_meta()


def _start_afresh_if_requeued(oid: ObjectId) -> None:
    """A job that failed for good and was requeued (CLI or dashboard) gets a fresh set of attempts, and its
    message is no longer parked."""
    job = get_current_job()
    if job is not None and job.meta.get(FINAL):
        # Unparked first: if the database is away this raises and the job stays failed for good, in view.
        messages.unpark(context.resources().db, [oid])
        del job.meta[FINAL]
        job.number_of_retries = 0
        job.save_meta()
        log.info("job %s was requeued after failing: fresh attempts", job.id)

