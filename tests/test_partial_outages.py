"""A socket service that fails part or all of its emits while a backlog waits: it gets no storm."""

from __future__ import annotations

import time

from core import metrics
from core.defaults import FAST_ATTEMPTS, SLOW_RETRY
from jobs import budget
from jobs.queueing import Enqueuer
from tests import factories
from tests.retry_schedule import early_retries
from tests.waiting import wait_until

BACKLOG = 40
WINDOW = 10.0


def test_a_failing_socket_service_gets_no_more_retries_than_the_budget_whatever_the_backlog(
    service, db, queue, receiver
):
    # Given a socket service that fails every emit, and a backlog of messages with their logs
    receiver.behaviour.status = 503
    mids = [factories.message(db) for _ in range(BACKLOG)]
    for mid in mids:
        factories.communication(db, mid)
    service.spawn("work", "--simple")
    service.spawn("schedule")  # moves due retries onto the queue
    enqueuer = Enqueuer(queue)
    for mid in mids:
        enqueuer.enqueue(str(mid))
    wait_until(lambda: len({a[1] for a in receiver.answers}) == BACKLOG, 30, "every message's first attempt")
    # When the retries come due while no new message arrives
    start = time.time()
    wait_until(lambda: time.time() > start + WINDOW, WINDOW + 1, "the window to pass")
    # Then the service got no more retries than the bucket holds and refills: a backlog on its own
    # schedule would have sent each message three more times in that window
    retries = sum(1 for arrived, *_ in receiver.answers if start <= arrived < start + WINDOW)
    allowed = budget.CAP + budget.FLOOR * WINDOW + 2
    assert retries <= allowed, f"{retries} retries in {WINDOW:.0f}s, the budget allows {allowed:.0f}"
    assert retries >= budget.FLOOR * WINDOW / 2, f"only {retries} retries: the backlog is not tried at all"
    # and no message was tried sooner than its schedule, the retries shed counting as attempts
    assert early_retries(receiver.answers, FAST_ATTEMPTS, SLOW_RETRY) == []
    assert metrics.value(queue.connection, metrics.RETRIES_SHED) >= BACKLOG


def test_retries_spend_no_budget_while_no_attempt_fails(service, db, queue, receiver):
    # Given a budget spent, then failures that stopped more than QUIET seconds ago
    queue.connection.set(budget.RECENT_KEY, "1", px=1)
    queue.connection.hset(budget.KEY, mapping={"tokens": "0", "at": repr(time.time())})
    wait_until(lambda: not queue.connection.exists(budget.RECENT_KEY), 5, "the failure mark to expire")
    # Then every retry may send, and spends nothing
    assert all(budget.allow_retry(queue.connection) for _ in range(20))
    assert float(queue.connection.hget(budget.KEY, "tokens")) < 1



def test_a_follow_up_job_leaves_the_message_to_its_scheduled_retry(service, db, queue, receiver):
    # Given a message whose emit fails after a second, and a second event for it while its job is mid-emit
    mid = factories.message(db)
    factories.communication(db, mid)
    receiver.behaviour.by_message[str(mid)] = (503, 1.0)
    service.spawn("work", "--simple")
    service.spawn("schedule")
    enqueuer = Enqueuer(queue)
    assert enqueuer.enqueue(str(mid)) == "enqueued"
    wait_until(lambda: receiver.requests >= 1, 20, "its job to be mid-emit")
    assert enqueuer.enqueue(str(mid)) == "follow-up"
    # When the job's attempt fails and the follow-up runs right after it
    # Then the follow-up sends nothing: the message is tried again on its retry's schedule, and decided once
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 20, "the decision")
    assert early_retries(receiver.answers, FAST_ATTEMPTS, SLOW_RETRY) == []
    assert [status for _, m, status, _ in receiver.answers if m == str(mid)] == [503, 200]
