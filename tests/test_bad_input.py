"""Bad input is decided, skipped with a counted warning, or failed without retry; never a crash or a storm."""

from __future__ import annotations

import json
import time
from unittest.mock import ANY

import pytest
import redis
from bson import ObjectId
from rq import Queue

from core import metrics
from core.defaults import QUEUE
from jobs.messages import CLAIM, HOLD
from jobs.queueing import job_id
from tests import factories
from tests.waiting import wait_until


@pytest.fixture
def running(service, client):
    """A watcher and a worker on the test's database; returns the database."""
    service.spawn("watch")
    service.spawn("work")
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: r.hget("msgstatus:watcher:stream:communications", "token"), 30, "the watcher")
    r.close()
    return client[service.database]


def decided(db, mid):
    return db.support_messages.find_one({"_id": mid, "delivered": {"$exists": True}})


def failed_ids(service) -> list[str]:
    r = redis.Redis.from_url(service.redis_url)
    try:
        return Queue(QUEUE, connection=r).failed_job_registry.get_job_ids()
    finally:
        r.close()


def a_good_pair_still_goes_through(db, receiver) -> None:
    mid = factories.message(db)
    factories.communication(db, mid)
    wait_until(lambda: decided(db, mid), 20, "a good message after the bad input")
    wait_until(lambda: receiver.emits_for(str(mid)), 5, "its emit")


def test_a_conv_message_id_stored_as_a_hex_string_matches_its_message(running, receiver):
    db = running
    mid = factories.message(db)
    factories.communication(db, str(mid))
    assert wait_until(lambda: decided(db, mid), 20, "the message")["delivered"] is True


@pytest.mark.parametrize("value", ["not-an-id", 12345, None, {"$oid": "x"}])
def test_a_communication_with_a_malformed_conv_message_id_is_skipped_with_a_counted_warning(
    service, running, receiver, value
):
    db = running
    cid = db.communications.insert_one({"conv_message_id": value, "account_id": ObjectId(), "success": True})
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: metrics.value(r, metrics.BAD_EVENTS) >= 1, 20, "the bad event to be counted")
    r.close()
    wait_until(lambda: all(part in service.log_text() for part in (f"communication {cid.inserted_id}",
                                                                   "skipped an event")),
               10, "the warning, naming the communication, in the watcher's log")
    a_good_pair_still_goes_through(db, receiver)


def test_a_communication_without_conv_message_id_is_skipped_too(service, running, receiver):
    db = running
    db.communications.insert_one({"account_id": ObjectId(), "success": True})
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: metrics.value(r, metrics.BAD_EVENTS) >= 1, 20, "the bad event to be counted")
    r.close()
    a_good_pair_still_goes_through(db, receiver)


def test_a_communication_for_a_message_that_does_not_exist_is_skipped(service, running, receiver):
    db = running
    ghost = ObjectId()
    factories.communication(db, ghost)
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: metrics.value(r, metrics.NOT_DECIDED, reason="not_free") >= 1, 20, "the skipped job")
    r.close()
    assert db.support_messages.count_documents({}) == 0 and not receiver.emits
    assert not failed_ids(service)


@pytest.mark.parametrize(
    ("success", "delivered"),
    [("false", False), (0, False), (None, False), ("missing", False), ("TRUE", False), ("yes", True), (1, True)],
)
def test_success_is_read_as_the_seeds_mongoose_model_casts_it(running, receiver, success, delivered):
    db = running
    mid = factories.message(db)
    if success == "missing":
        db.communications.insert_one({"conv_message_id": mid, "account_id": ObjectId()})
    else:
        factories.communication(db, mid, success=success)
    assert wait_until(lambda: decided(db, mid), 20, "the message")["delivered"] is delivered


@pytest.mark.parametrize(
    ("message", "comm", "reason"),
    [
        ({"sender_id": None}, {}, "has no sender_id"),
        ({}, {"account_id": None}, "has no account_id"),
    ],
    ids=["no-sender-id", "no-account-id"],
)
def test_a_message_the_emit_cannot_be_made_for_fails_at_once_parked_and_otherwise_untouched(
    service, running, receiver, message, comm, reason
):
    db = running
    mid = factories.message(db, **message)
    if message.get("sender_id", 1) is None:
        db.support_messages.update_one({"_id": mid}, {"$unset": {"sender_id": ""}})
    # As written, before its log can start a job (one may park it within milliseconds of the log)
    before = db.support_messages.find_one({"_id": mid})
    before.pop(CLAIM, None)  # a job may be holding it right now: its lease is not the message's data
    cid = factories.communication(db, mid)
    if comm.get("account_id", 1) is None:
        db.communications.update_one({"_id": cid}, {"$unset": {"account_id": ""}})
    wait_until(lambda: job_id(str(mid)) in failed_ids(service), 20, "the job in the failed registry")
    after = db.support_messages.find_one({"_id": mid})
    assert after.pop(HOLD) == {"kind": "parked", "since": ANY, "error": ANY}
    assert after == before
    assert receiver.requests == 0
    r = redis.Redis.from_url(service.redis_url)
    job = Queue(QUEUE, connection=r).fetch_job(job_id(str(mid)))
    assert reason in job.latest_result().exc_string
    assert job.retries_left is None and metrics.value(r, metrics.RETRIES, schedule="fast") == 0
    r.close()
    # The sweep leaves it to an operator without looking at it: no retry storm.
    sweep = json.loads(service.run("sweep", "--once").stdout)
    assert sweep["examined"] == 0 and sweep["enqueued"] == 0
    a_good_pair_still_goes_through(db, receiver)


def test_huge_and_deeply_nested_metadata_is_decided_and_emitted_intact(running, receiver):
    db = running
    deep: dict = {"leaf": True}
    for level in range(80):
        deep = {f"level{level}": deep}
    metadata = {"notes": "x" * 2_000_000, "deep": deep}
    mid = factories.message(db, metadata=metadata)
    factories.communication(db, mid)
    doc = wait_until(lambda: decided(db, mid), 30, "the message")
    assert doc["delivered"] is True and doc["metadata"]["deep"] == deep
    wait_until(lambda: receiver.emits_for(str(mid)), 10, "the emit")
    assert len(receiver.emits_for(str(mid))[0].body["data"]["metadata"]["notes"]) == 2_000_000


def test_an_unknown_source_is_never_touched(running, receiver):
    db = running
    mid = factories.message(db, source="whatsapp")
    factories.communication(db, mid)
    time.sleep(1.5)  # nothing must happen; there is no condition to wait for
    assert not decided(db, mid) and not receiver.emits
