"""The logs the watcher saw decide their messages without a lookup, and only while they still say so."""

from __future__ import annotations

import uuid

import bson
import redis
from bson import ObjectId

from core import metrics
from jobs.seenlogs import LOGS_KEY, latest_delivery
from tests import factories
from tests.conftest import Service, commands_sent
from tests.test_watcher import active_watcher, catch_up_done
from tests.waiting import wait_until


def seen(service: Service, mid: ObjectId) -> dict[bytes, bytes]:
    """The logs the watcher keeps for ``mid``: log id -> the log if it says delivered, else empty."""
    r = redis.Redis.from_url(service.redis_url)
    try:
        return r.hgetall(f"{LOGS_KEY}{mid}")  # type: ignore[return-value]
    finally:
        r.close()


def watching(service: Service) -> None:
    service.spawn("watch")
    wait_until(lambda: active_watcher(service), 20, "the watcher")


def test_the_latest_kept_delivery_decides_and_failed_logs_are_kept_empty():
    older, newer = ObjectId(), ObjectId()
    kept = [b"", bson.encode({"_id": newer, "success": True}), bson.encode({"_id": older, "success": True})]
    assert latest_delivery(kept)["_id"] == newer  # type: ignore[index]
    assert latest_delivery([b"", b""]) is None


def test_messages_whose_delivered_logs_the_watcher_saw_are_decided_without_looking_their_logs_up(
    service, client, receiver
):
    # Given the watcher, caught up, and a worker that names itself to the server
    db = client[service.database]
    app = f"seen-logs-{uuid.uuid4().hex[:6]}"
    service.spawn("watch")
    service.spawn("work", "--simple", MONGO_DB_URL=f"{service.mongo_url}&appName={app}")
    wait_until(lambda: active_watcher(service) and catch_up_done(service), 20, "the watcher, caught up")
    before = commands_sent(client, app, "find")
    r = redis.Redis.from_url(service.redis_url)
    # When five messages arrive, one after another, each followed by its successful log once the watcher
    # has seen the message without one (so that only the log's event enqueues its job)
    mids = []
    for i in range(5):
        mids.append(factories.message(db))
        wait_until(lambda i=i: metrics.value(r, metrics.BEFORE_LOG) == i + 1, 10, "the message's event")
        factories.communication(db, mids[-1])
        wait_until(lambda: db.support_messages.find_one({"_id": mids[-1], "delivered": True}), 20, "the decision")
    r.close()
    # Then each was decided delivered and emitted once, and the worker never looked a log up
    assert all(len(receiver.emits_for(str(m))) == 1 for m in mids)
    assert commands_sent(client, app, "find") - before == 0


def test_a_log_corrected_to_failure_before_its_job_runs_decides_its_message_undelivered(service, client, receiver):
    # Given the watcher alone, which has seen a message's successful log
    db = client[service.database]
    watching(service)
    mid = factories.message(db)
    log = factories.communication(db, mid)
    wait_until(lambda: seen(service, mid).get(str(log).encode()), 10, "the log kept as a delivery")
    # When the provider corrects it to success: false before any worker runs
    db.communications.update_one({"_id": log}, {"$set": {"success": False}})
    wait_until(lambda: seen(service, mid).get(str(log).encode()) == b"", 10, "the log kept as failed")
    service.spawn("work", "--simple")
    # Then the message is decided as its log now says
    decided = wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": {"$exists": True}}), 20,
                         "the decision")
    assert decided["delivered"] is False
    assert [e.body["data"]["delivered"] for e in receiver.emits_for(str(mid))] == [False]


def test_a_log_moved_to_another_message_decides_that_one_and_no_longer_the_first(service, client, receiver, queue):
    # Given the watcher alone, which has seen a successful log of a first message
    db = client[service.database]
    watching(service)
    first, second = factories.message(db), factories.message(db)
    log = factories.communication(db, first)
    wait_until(lambda: seen(service, first), 10, "the log kept for the first message")
    # When the log is given to the second message before any worker runs
    db.communications.update_one({"_id": log}, {"$set": {"conv_message_id": second}})
    wait_until(lambda: seen(service, second) and not seen(service, first), 10, "the log kept for the second only")
    service.spawn("work", "--simple")
    # Then the second is delivered, and the first (whose job ran too) has no log, so stays undecided
    wait_until(lambda: db.support_messages.find_one({"_id": second, "delivered": True}), 20, "the decision")
    wait_until(lambda: queue.count == 0 and not queue.started_job_registry.get_job_ids(), 10, "the jobs to end")
    assert "delivered" not in db.support_messages.find_one({"_id": first})
    assert receiver.emits_for(str(first)) == []
