"""The watcher: events enqueue at once, resume after crashes, never stall silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import bson
import pymongo
import pytest
import redis

from core import metrics
from core.defaults import SWEEP_QUEUE
from jobs.queueing import Enqueuer
from tests import factories
from tests.conftest import HOST, SECRET, Service, start_mongo
from tests.waiting import wait_until
from watcher.events import BACKLOG, LINGER
from watcher.lock import LeaderLock
from watcher.recent import TRUST_AFTER
from watcher.tokens import TokenStore


def pairs(db, count: int) -> list:
    mids = [factories.message(db) for _ in range(count)]
    for mid in mids:
        factories.communication(db, mid)
    return mids


def all_decided(db, mids) -> bool:
    return db.support_messages.count_documents({"_id": {"$in": mids}, "delivered": {"$exists": True}}) == len(mids)


def emits_per_message(receiver, mids) -> dict[str, int]:
    return {str(m): len(receiver.emits_for(str(m))) for m in mids}


def active_watcher(service: Service) -> bool:
    r = redis.Redis.from_url(service.redis_url)
    try:
        return LeaderLock.holder(r) is not None and r.hget("msgstatus:watcher:stream:communications", "token")
    finally:
        r.close()


def catch_up_done(service: Service) -> bool:
    """The start-up catch-up sweep has run (finished jobs are not kept)."""
    r = redis.Redis.from_url(service.redis_url)
    try:
        return not r.exists("rq:job:msgstatus-catch-up-sweep") and not r.llen(f"rq:queue:{SWEEP_QUEUE}")
    finally:
        r.close()


def test_an_insert_pair_is_delivered_with_the_scheduler_stopped_so_the_watcher_brought_it(service, client, receiver):
    db = client[service.database]
    service.spawn("watch")
    service.spawn("work")
    wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
    wait_until(lambda: catch_up_done(service), 20, "the start-up catch-up sweep to finish")
    (mid,) = pairs(db, 1)
    wait_until(lambda: all_decided(db, [mid]), 20, "the watcher-driven delivery")
    assert emits_per_message(receiver, [mid]) == {str(mid): 1}


def test_a_message_arriving_after_its_log_is_caught_by_the_message_stream(service, client, receiver):
    db = client[service.database]
    service.spawn("watch")
    service.spawn("work")
    wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
    mid = bson.ObjectId()
    factories.communication(db, mid)
    time.sleep(0.3)  # the communication's job runs first and finds no message
    factories.message(db, _id=mid)
    wait_until(lambda: all_decided(db, [mid]), 20, "delivery of the comm-first message")


def test_fifty_pairs_written_while_the_watcher_is_killed_are_all_delivered_once(service, client, receiver):
    db = client[service.database]
    watcher = service.spawn("watch")
    service.spawn("work", "--workers", "2", "--simple")
    wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
    first = pairs(db, 5)
    wait_until(lambda: all_decided(db, first), 20, "the first pairs")
    service.kill(watcher)
    watcher.wait(10)
    down = pairs(db, 50)
    service.spawn("watch")
    wait_until(lambda: all_decided(db, down), 30, "all 50 pairs written while the watcher was down")
    time.sleep(0.5)  # a duplicate emit would arrive now and fail the next line
    assert set(emits_per_message(receiver, first + down).values()) == {1}


def test_a_token_the_server_rejects_gives_a_warning_a_catch_up_sweep_and_loses_nothing(service, client, receiver):
    db = client[service.database]
    r = redis.Redis.from_url(service.redis_url)
    store = TokenStore(r)
    for stream in ("messages", "communications"):
        store.save(stream, {"_data": "ff" * 16})  # from "another server": answered with 286
    missed = pairs(db, 10)  # written before any watcher: only the catch-up sweep can find them
    service.spawn("watch")
    service.spawn("work")
    wait_until(lambda: all_decided(db, missed), 30, "the catch-up sweep's deliveries")
    assert metrics.value(r, metrics.HISTORY_LOST) >= 2
    assert store.load("communications") != {"_data": "ff" * 16}
    later = pairs(db, 3)
    wait_until(lambda: all_decided(db, later), 20, "events after the recovery")
    log = service.logs[0].read_text()
    assert "cannot resume from the stored token" in log
    assert log.count("catch-up sweep") <= 6, "the watcher must not loop on a dead token"
    r.close()


def test_a_standby_watcher_takes_over_when_the_active_one_is_killed(service, client, receiver):
    db = client[service.database]
    a, b = service.spawn("watch"), service.spawn("watch")
    service.spawn("work")
    r = redis.Redis.from_url(service.redis_url)
    holder = wait_until(lambda: LeaderLock.holder(r), 20, "a leader")
    wait_until(lambda: active_watcher(service), 20, "the active watcher's streams")
    # Which process holds the lock? The one whose log says it is active.
    active = wait_until(
        lambda: next((p for p, log in zip((a, b), service.logs, strict=False)
                      if f"watcher {holder[:8]} is active" in log.read_text()), None),
        10, "the active watcher's log line")
    service.kill(active)
    killed_at = time.monotonic()
    wait_until(lambda: LeaderLock.holder(r) not in (None, holder), 20, "the standby to take the lock")
    took = time.monotonic() - killed_at
    (mid,) = pairs(db, 1)
    wait_until(lambda: all_decided(db, [mid]), 20, "delivery by the new active watcher")
    assert took < 10, f"takeover took {took:.1f}s"
    r.close()


def test_the_watcher_survives_the_database_going_away_for_ten_seconds(redis_url, receiver, db_name):
    server = start_mongo()
    url = f"mongodb://{HOST}:{server.port}/{db_name}?directConnection=true"
    service = Service(
        {"PATH": os.environ["PATH"], "MONGO_DB_URL": url, "REDIS_URL": redis_url, "APP_SECRET": SECRET,
         "CONVERSATION_SOCKET": receiver.url}, url, redis_url, db_name,
    )
    try:
        watcher = service.spawn("watch")
        service.spawn("work", "--simple")
        wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
        server.stop()
        time.sleep(10)  # the outage itself, not a wait for a condition
        server = start_mongo(port=server.port)
        with pymongo.MongoClient(url) as client:
            db = client[db_name]
            mids = pairs(db, 3)
            wait_until(lambda: all_decided(db, mids), 60, "deliveries after the database came back")
        assert watcher.poll() is None, "the watcher died"
    finally:
        service.stop_all()
        server.stop()


def test_run_starts_everything_on_the_embedded_default_and_stops_it_on_sigterm(tmp_path, receiver):
    from embedded.processes import free_port, msgstatus_argv

    mongo_port, redis_port = free_port(), free_port()
    env = {"PATH": os.environ["PATH"], "CONVERSATION_SOCKET": receiver.url, "APP_SECRET": ""}
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            msgstatus_argv("run", "--workers", "2", "--mongo-port", str(mongo_port), "--redis-port", str(redis_port)),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"mongodb://127.0.0.1:{mongo_port}/msgstatus?directConnection=true"
        r = wait_until(lambda: _redis_with_leader(redis_port), 60, "the embedded servers and an active watcher")
        r.close()
        with pymongo.MongoClient(url) as client:
            (mid,) = pairs(client.msgstatus, 1)
            wait_until(lambda: all_decided(client.msgstatus, [mid]), 30, "a delivery through `run`")
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)
    text = log_path.read_text()
    assert code == 0, text
    for name in ("mongo", "redis", "watcher", "worker-1", "worker-2", "scheduler"):
        assert f"started {name} (pid" in text, name
        assert f"{name} (pid" in text.split("started scheduler")[-1], f"no exit line for {name}"


def _redis_with_leader(port: int) -> redis.Redis | None:
    r = redis.Redis(port=port)
    try:
        if LeaderLock.holder(r):
            return r
    except redis.RedisError:
        pass
    r.close()
    return None


@pytest.fixture(autouse=True)
def _embedded_secret_for_run(request, receiver):
    """With nothing configured, the embedded default's secret signs the JWT."""
    if request.node.name.startswith("test_run_"):
        from core.defaults import EMBEDDED_APP_SECRET

        receiver.secret = EMBEDDED_APP_SECRET


def test_a_log_given_its_conv_message_id_by_an_update_decides_its_message_within_the_watchers_latency(
    service, client, receiver
):
    # Given the watcher and a worker, and no scheduler (no sweep runs after the start-up catch-up)
    db = client[service.database]
    service.spawn("watch")
    service.spawn("work", "--simple")
    wait_until(lambda: active_watcher(service) and catch_up_done(service), 20, "the watcher, caught up")
    # When a message's log is written without conv_message_id, and given it by an update 100 ms later
    mid = factories.message(db)
    log = db.communications.insert_one({"account_id": bson.ObjectId(), "success": True}).inserted_id
    time.sleep(0.1)  # the late update the provider's callback makes; nothing waits on it
    db.communications.update_one({"_id": log}, {"$set": {"conv_message_id": mid}})
    # Then the update's event decides the message (no sweep runs: nothing else could find it)
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 10, "the decision")
    assert len(receiver.emits_for(str(mid))) == 1


def test_a_log_corrected_after_the_decision_is_counted_and_explained_and_the_decision_stands(
    service, client, receiver
):
    # Given a message delivered on its log's success: true
    db = client[service.database]
    service.spawn("watch")
    service.spawn("work", "--simple")
    wait_until(lambda: active_watcher(service), 20, "the watcher")
    mid = factories.message(db)
    log = factories.communication(db, mid)
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 20, "the decision")
    # When the provider corrects the log to success: false
    db.communications.update_one({"_id": log}, {"$set": {"success": False}})
    before = db.support_messages.find_one({"_id": mid})
    db.communications.update_one({"_id": log}, {"$set": {"success": False}})
    # Then the change is counted, once, and explain shows it
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: metrics.value(r, metrics.LATE_CHANGES) == 1, 10, "the change counted")
    # (another update of the log: its job sees the same change and notes it again, which renews its record)
    noticed = f"msgstatus:late:{mid}"
    r.pexpire(noticed, 60_000)  # a short life left: the renewal gives it its whole TTL again
    db.communications.update_one({"_id": log}, {"$set": {"provider": "twilio-again"}})
    wait_until(lambda: r.pttl(noticed) > 60_000, 10, "the same change seen by the next update's job")
    shown = service.run("explain", str(mid))
    assert shown.returncode == 0 and f"communication {log} now says delivered=False" in shown.stdout
    assert "the decision stands" in shown.stdout
    # and the message was neither touched nor emitted again
    assert db.support_messages.find_one({"_id": mid}) == before
    assert len(receiver.emits_for(str(mid))) == 1
    assert metrics.value(r, metrics.LATE_CHANGES) == 1
    r.close()


def test_a_log_arriving_past_the_horizon_still_decides_its_message_at_once(service, client, receiver):
    # Given a message created two hours ago whose log has not come (past LOG_HORIZON: no regular sweep looks)
    db = client[service.database]
    mid = factories.message(db, created=datetime.now(UTC) - timedelta(hours=2))
    assert "which retires it if it still has no log" in service.run("explain", str(mid)).stdout
    assert json.loads(service.run("sweep", "--once").stdout)["retired"] == 1
    explained = service.run("explain", str(mid))
    assert explained.returncode == 1 and "not by the regular sweeps: retired" in explained.stdout
    service.spawn("watch")
    service.spawn("work", "--simple")
    wait_until(lambda: active_watcher(service) and catch_up_done(service), 20, "the watcher, caught up")
    # When its log is inserted, Then its event decides it
    factories.communication(db, mid)
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 10, "the decision")


def test_the_watchers_catch_up_sweep_looks_past_the_horizon(service, client, receiver):
    # Given a message two hours old whose log was written while no watcher ran (its event was missed)
    db = client[service.database]
    mid = factories.message(db, created=datetime.now(UTC) - timedelta(hours=2))
    factories.communication(db, mid)
    # When the watcher starts without a resume token and enqueues its catch-up sweep (no scheduler runs)
    service.spawn("watch")
    service.spawn("work", "--simple")
    # Then the catch-up sweep, which looks at undecided messages of any age, finds and decides it
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 20, "the decision")



def test_once_the_watchers_memory_is_trusted_a_message_after_its_log_is_still_enqueued_by_its_event(
    service, client, receiver
):
    # Given a watcher that has watched logs long enough to trust its memory of them, and no scheduler (no sweep)
    db = client[service.database]
    r = redis.Redis.from_url(service.redis_url)
    service.spawn("watch")
    service.spawn("work")
    wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
    time.sleep(TRUST_AFTER + 0.5)  # the memory's own warm-up, not a wait for an outcome
    # When a log comes first (its job runs and finds no message), then its message
    mid = bson.ObjectId()
    factories.communication(db, mid)
    wait_until(lambda: metrics.value(r, metrics.NOT_DECIDED, reason="not_free") >= 1, 10, "the log's job")
    factories.message(db, _id=mid)
    # Then the message's own insert event enqueued it: the watcher remembered the log it had seen
    wait_until(lambda: all_decided(db, [mid]), 10, "delivery of the comm-first message")


def test_while_status_jobs_queue_up_logs_arriving_one_by_one_wait_in_batch_jobs(service, client, queue):
    # Given an active watcher, no worker, and three status jobs already waiting in the queue
    db = client[service.database]
    service.spawn("watch")
    wait_until(lambda: active_watcher(service), 20, "the watcher to be active")
    enqueuer = Enqueuer(queue)
    for _ in range(BACKLOG + 1):
        enqueuer.enqueue(str(bson.ObjectId()))
    # When 20 messages arrive, each log 10 ms after the one before (each alone in its getMore, were the
    # stream not lingering)
    mids = [factories.message(db) for _ in range(20)]
    began = time.monotonic()
    for mid in mids:
        factories.communication(db, mid)
        time.sleep(0.01)  # the traffic's own pace
    span = time.monotonic() - began
    # Then they wait in batch jobs of several: at most one job per lingering getMore of either stream (a
    # message's own event enqueues it too, if its log was seen first) while the logs came
    waiting = wait_until(lambda: _jobs_naming(queue, mids), 10, "every message to wait in a job")
    assert len(waiting) <= 2 * (span / LINGER + 1), (len(waiting), f"{span:.2f}s", waiting)


def _jobs_naming(queue, mids) -> list[str] | None:
    """The queued jobs that name any of ``mids``, once every one of them is named by some job."""
    named, jobs = set(), []
    for job in queue.jobs:
        ids = set(job.args[0]) if isinstance(job.args[0], list) else {job.args[0]}
        if ids & {str(m) for m in mids}:
            jobs.append(job.id)
            named |= ids
    return jobs if {str(m) for m in mids} <= named else None
