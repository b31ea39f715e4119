"""The service against a replica set failing in its own ways, through MongoDB's failCommand fail point.

The service's processes connect with their own ``appName``, and each fail point names it, so that only
they meet the failure; every scenario ends with each message decided once and emitted at most twice
(the documented duplicate: a commit whose outcome was lost), under one idempotency key.
"""

from __future__ import annotations

import pytest
import redis

from core import metrics
from jobs.queueing import Enqueuer
from tests import factories
from tests.conftest import APP
from tests.test_watcher import active_watcher, catch_up_done
from tests.waiting import wait_until

MESSAGES = 5


def start(service) -> dict[str, str]:
    """Watcher, worker and scheduler on a URL naming the service's appName; running and caught up."""
    env = {"MONGO_DB_URL": f"{service.mongo_url}&appName={APP}"}
    service.spawn("watch", **env)
    service.spawn("work", "--simple", **env)
    service.spawn("schedule", **env)
    wait_until(lambda: active_watcher(service) and catch_up_done(service), 30, "the watcher, caught up")
    return env


def write(db, count: int = MESSAGES) -> list:
    mids = [factories.message(db) for _ in range(count)]
    for mid in mids:
        factories.communication(db, mid)
    return mids


def all_decided_once(service, db, receiver, mids: list, within: float, before: int = 0) -> None:
    """Every message delivered, counted as decided once each (``before``: decisions counted earlier), and
    emitted once or twice under one key."""
    wait_until(lambda: db.support_messages.count_documents({"_id": {"$in": mids}, "delivered": True}) == len(mids),
               within, f"{len(mids)} decisions")
    r = redis.Redis.from_url(service.redis_url)
    try:
        decided = len(mids) + before
        wait_until(lambda: metrics.value(r, metrics.DECIDED, delivered="true") >= decided, 10, "the counts")
        assert metrics.value(r, metrics.DECIDED, delivered="true") == decided, "a message was decided twice"
    finally:
        r.close()
    for mid in mids:
        emits = receiver.emits_for(str(mid))
        assert 1 <= len(emits) <= 2 and len({e.headers["idempotency-key"] for e in emits}) == 1, (mid, emits)


FAILURES = [
    pytest.param({"errorCode": 11602}, id="election-InterruptedDueToReplStateChange"),
    pytest.param({"errorCode": 10107}, id="election-NotWritablePrimary"),
    pytest.param({"closeConnection": True}, id="connection-closed-unknown-result"),
    pytest.param({"blockConnection": True, "blockTimeMS": 3000}, id="primary-blocked-3s"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_decisions_write_that_meets_an_election_a_lost_reply_or_a_stalled_primary_decides_each_message_once(
    service, db, queue, receiver, fail_point, failure
):
    # Given a worker, and the next two updates it sends failing (a decision's write, and the driver's one
    # retry of that retryable write)
    service.spawn("work", "--simple", MONGO_DB_URL=f"{service.mongo_url}&appName={APP}")
    service.spawn("schedule", MONGO_DB_URL=f"{service.mongo_url}&appName={APP}")  # moves the fast retries
    fail_point({"times": 2}, failCommands=["update"], **failure)
    # When messages and their logs arrive, each with a job of its own
    mids = write(db)
    for mid in mids:
        Enqueuer(queue).enqueue(str(mid))
    # Then each is decided once (the job retries what the driver did not)
    all_decided_once(service, db, receiver, mids, 60)
    assert fail_point("off") == 2


@pytest.mark.parametrize("failure", FAILURES)
def test_a_waves_commit_that_meets_an_election_a_lost_reply_or_a_stalled_primary_decides_each_message_once(
    service, db, receiver, fail_point, failure
):
    # Given workers and the sweep, and the next two commits of their transactions failing (a wave's commit,
    # and the driver's one retry of it)
    env = {"MONGO_DB_URL": f"{service.mongo_url}&appName={APP}", "SWEEP_INTERVAL": "1"}
    service.spawn("work", "--simple", **env)
    fail_point({"times": 2}, failCommands=["commitTransaction"], **failure)
    # When messages and their logs are there, which a sweep enqueues together as one batch
    mids = write(db)
    service.spawn("schedule", **env)
    # Then each is decided once (those of the failed wave by jobs of their own)
    all_decided_once(service, db, receiver, mids, 60)
    assert fail_point("off") == 2


def test_write_conflicts_on_the_claim_and_the_decision_are_retried_and_decide_each_message_once(
    service, db, receiver, fail_point
):
    # Given every findAndModify (a claim) and update (a decision, a batch's claims) of the service answered
    # with a write conflict until it is lifted
    start(service)
    fail_point("alwaysOn", failCommands=["findAndModify", "update"], errorCode=112)
    mids = write(db, 2)
    wait_until(lambda: "WriteConflict" in service.log_text(), 30, "a conflict in the service's log")
    # When the conflicts stop
    assert fail_point("off") >= 1
    # Then the retries decide every message once
    all_decided_once(service, db, receiver, mids, 60)


@pytest.mark.parametrize("failure", [
    pytest.param({"closeConnection": True}, id="connection-closed"),
    pytest.param({"errorCode": 91, "errorLabels": ["ResumableChangeStreamError"]}, id="resumable-error-label"),
    pytest.param({"errorCode": 43}, id="cursor-killed"),
    pytest.param({"errorCode": 11601}, id="non-resumable-Interrupted"),
])
def test_a_change_stream_that_fails_on_getmore_loses_no_event_and_enqueues_none_twice(
    service, db, receiver, fail_point, failure
):
    # Given the watcher streaming, and its next getMore failing
    start(service)
    r = redis.Redis.from_url(service.redis_url)
    try:
        before = {s: metrics.value(r, metrics.CHANGE_EVENTS, stream=s) for s in ("messages", "communications")}
        fail_point({"times": 1}, failCommands=["getMore"], **failure)
        # When messages and their logs arrive
        mids = write(db)
        # Then every one is decided once, and each insert reached the watcher once
        all_decided_once(service, db, receiver, mids, 60)
        assert fail_point("off") == 1

        def seen() -> dict[str, float]:
            return {s: metrics.value(r, metrics.CHANGE_EVENTS, stream=s) - before[s] for s in before}

        expected = {"messages": MESSAGES, "communications": MESSAGES}
        wait_until(lambda: seen() == expected, 10, f"every insert as one event (seen {seen()})")
    finally:
        r.close()


@pytest.mark.parametrize("collection", ["support_messages", "communications"])
def test_a_watched_collection_dropped_and_recreated_loses_no_message(service, db, receiver, collection):
    # Given the service running, and a message decided
    start(service)
    all_decided_once(service, db, receiver, write(db, 1), 30)
    stream = "messages" if collection == "support_messages" else "communications"
    r = redis.Redis.from_url(service.redis_url)
    try:
        before = metrics.value(r, metrics.CHANGE_EVENTS, stream=stream)
        # When a watched collection is dropped, then written to again (recreated, its indexes gone)
        db[collection].drop()
        mids = write(db)
        # Then every new message is decided once, and the watcher saw every insert into it (not only a sweep)
        all_decided_once(service, db, receiver, mids, 60, before=1)
        wait_until(lambda: metrics.value(r, metrics.CHANGE_EVENTS, stream=stream) - before == MESSAGES, 10,
                   "the inserts into the recreated collection as events")
    finally:
        r.close()
