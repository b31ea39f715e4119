"""No failure of any length or kind leaves a message waiting for good: real workers, Redis, MongoDB, receiver."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from bson import ObjectId
from rq import Worker
from rq.job import Job, JobStatus

from core import metrics
from core.defaults import LOG_HORIZON, SWEEP_BATCH
from jobs import messages, sweep
from jobs.messages import CLAIM, HOLD
from jobs.queueing import FINAL, JOB_FUNCTION, Enqueuer, follow_up_id, job_id
from tests import factories
from tests.relay import Relay
from tests.waiting import wait_until


def decided(db, message_id):
    return db.support_messages.find_one({"_id": message_id, "delivered": {"$exists": True}})


def count(db, query) -> int:
    return db.support_messages.count_documents(query)


def held_for_retry(db) -> int:
    return count(db, {f"{HOLD}.kind": "retry", "delivered": {"$exists": False}})


def failed_jobs(queue) -> list[tuple[str, str]]:
    """Each job in the failed registry with the end of its error, for an assertion's message."""
    failed = []
    for jid in queue.failed_job_registry.get_job_ids():
        result = Job.fetch(jid, connection=queue.connection).latest_result()
        failed.append((jid, (result.exc_string or "")[-300:] if result else "no result"))
    return failed


def test_messages_refused_with_401_are_decided_within_one_slow_retry_after_the_socket_accepts_again(
    service, db, queue, receiver
):
    # Given a socket service refusing every emit with 401 (a wrong APP_SECRET), and 200 messages
    receiver.behaviour.status = 401
    slow, sweep_every = 10, 1
    env = {"FAST_ATTEMPTS": "2", "SLOW_RETRY": str(slow), "SWEEP_INTERVAL": str(sweep_every)}
    service.spawn("work", "--workers", "2", "--simple", **env)
    service.spawn("schedule", **env)
    mids = [factories.message(db) for _ in range(200)]
    for mid in mids:
        factories.communication(db, mid)
    # When every fast attempt has failed: each message waits for its slow retry, none is parked
    wait_until(lambda: held_for_retry(db) == 200, 90, "200 messages waiting for a slow retry")
    assert queue.failed_job_registry.count == 0, failed_jobs(queue)
    # and the socket service accepts again, with no operator doing anything
    receiver.behaviour.status = 200
    accepted = time.monotonic()
    # Then all 200 are decided within one slow-retry cadence (plus one sweep to find the first due one)
    wait_until(lambda: count(db, {"_id": {"$in": mids}, "delivered": True}) == 200, slow + sweep_every + 10,
               "all 200 messages to be delivered")
    healed = time.monotonic() - accepted
    print(f"200 messages healed {healed:.1f}s after the socket service accepted again (slow retry {slow}s)")
    assert held_for_retry(db) == 0
    assert queue.failed_job_registry.count == 0, failed_jobs(queue)
    assert len({e.message_id for e in receiver.emits}) == 200


def test_a_sweep_examines_none_of_2000_held_or_parked_messages_but_finds_the_due_and_the_new(service, db):
    # Given 1,000 messages waiting for a slow retry, 1,000 parked for an operator, all with logs
    now = datetime.now(UTC)
    base = {"sender_type": "conversation", "source": "sms", "sender_id": 1, "created": now}
    waiting = [{**base, HOLD: {"kind": "retry", "until": now + timedelta(minutes=5), "since": now}}
               for _ in range(1000)]
    parked = [{**base, HOLD: {"kind": "parked", "since": now, "error": "no account_id"}} for _ in range(1000)]
    ids = db.support_messages.insert_many(waiting + parked).inserted_ids
    db.communications.insert_many([{"conv_message_id": i, "success": True, "account_id": 1} for i in ids])
    messages.ensure_indexes(db)
    # When a sweep runs
    result = json.loads(service.run("sweep", "--once").stdout)
    # Then it examines none of them
    assert result["examined"] == 0 and result["enqueued"] == 0
    # And once one slow retry is due and a new message arrives, it examines exactly those two
    due = ids[0]
    db.support_messages.update_one({"_id": due}, {"$set": {f"{HOLD}.until": now - timedelta(seconds=1)}})
    fresh = factories.message(db)
    factories.communication(db, fresh)
    result = json.loads(service.run("sweep", "--once").stdout)
    assert result["examined"] == 2 and result["enqueued"] == 2, result
    print(f"sweep with 2,000 held: {result['seconds'] * 1000:.1f} ms")


ORPHANS = 4_000
"""Messages whose log never came, in the retirement test: eight sweeps' worth."""


def test_a_sweep_retires_messages_whose_log_never_came_500_at_a_time_and_then_examines_none_of_them(
    service, db, queue
):
    # Given 4,000 tracked messages (`make orphans` measures 10,000) created two to three hours ago whose logs
    # never came (past LOG_HORIZON, 1 h)
    now = datetime.now(UTC)
    orphans = [{"sender_type": "conversation", "source": "sms", "sender_id": 1,
                "created": now - timedelta(hours=2, seconds=i % 3600)} for i in range(ORPHANS)]
    db.support_messages.insert_many(orphans)
    messages.ensure_indexes(db)
    # and a new message with its log
    fresh = factories.message(db)
    factories.communication(db, fresh)
    # When sweeps run, Then the first enqueues the new one, and each retires its share, until all are
    first = json.loads(service.run("sweep", "--once").stdout)
    assert (first["enqueued"], first["retired"]) == (1, sweep.RETIRE_BATCH), first
    retiring = [first]
    enqueuer = Enqueuer(queue)
    while sum(r.get("retired", 0) for r in retiring) < ORPHANS and len(retiring) < 30:
        retiring.append(sweep.sweep(db, enqueuer, SWEEP_BATCH, LOG_HORIZON).as_dict())
        assert retiring[-1]["examined"] <= sweep.RETIRE_BATCH + 1, retiring[-1]
    assert sum(r.get("retired", 0) for r in retiring) == ORPHANS
    # and the next sweep examines only the two new ones (the first still waits in the queue: no worker runs)
    newer = factories.message(db)
    factories.communication(db, newer)
    result = json.loads(service.run("sweep", "--once").stdout)
    assert (result["examined"], result["with_log"], result["enqueued"]) == (2, 2, 1), result
    print(f"sweep with {ORPHANS:,} messages retired past the log horizon: {result['seconds'] * 1000:.1f} ms "
          f"(each of the {len(retiring)} that retired them: up to "
          f"{max(r['seconds'] for r in retiring) * 1000:.0f} ms)")


def test_a_message_with_bad_data_stays_in_the_failed_registry_and_no_sweep_touches_it(service, db, queue, receiver):
    # Given a communication log without account_id: the emit cannot be made, whatever happens outside
    mid = factories.message(db)
    factories.communication(db, mid, account_id=None)
    service.spawn("work")
    service.spawn("schedule", SWEEP_INTERVAL="1")
    # When its job runs
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: job_id(str(mid)) in queue.failed_job_registry.get_job_ids(), 20, "the job to fail")
    # Then it is parked, named in the failed registry, and the sweeps that follow leave it there untouched
    r = queue.connection
    sweeps, examined = metrics.value(r, metrics.SWEEPS), metrics.value(r, metrics.SWEEP_EXAMINED)
    wait_until(lambda: metrics.value(r, metrics.SWEEPS) >= sweeps + 3, 20,
               "three more sweeps")
    assert metrics.value(r, metrics.SWEEP_EXAMINED) == examined, "a sweep looked at the parked message"
    assert job_id(str(mid)) in queue.failed_job_registry.get_job_ids() and queue.count == 0
    doc = db.support_messages.find_one({"_id": mid})
    assert doc[HOLD]["kind"] == "parked" and "no account_id" in doc[HOLD]["error"]
    assert "delivered" not in doc and receiver.requests == 0


@pytest.mark.parametrize("how", ["cli", "dashboard"])
def test_a_requeued_job_starts_a_fresh_set_of_attempts(service, db, queue, receiver, how):
    # Given a job that failed twice from outside, then on data the socket service refused
    env = {"FAST_ATTEMPTS": "3"}
    receiver.behaviour.fail_next = [503, 503, 422]
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", **env)
    service.spawn("schedule", **env)
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: job_id(str(mid)) in queue.failed_job_registry.get_job_ids(), 30, "the job to fail")
    assert Job.fetch(job_id(str(mid)), connection=queue.connection).number_of_retries == 2
    # When an operator requeues it (the data fixed), and the socket service fails twice more
    receiver.behaviour.fail_next = [503, 503]
    if how == "cli":
        assert json.loads(service.run("requeue", "--failed").stdout)["requeued"] == 1
    else:  # what rq-dashboard's requeue button calls
        from rq.job import requeue_job

        requeue_job(job_id(str(mid)), connection=queue.connection)
    # Then it gets all three attempts again: delivered on the third, never held, never failed
    doc = wait_until(lambda: decided(db, mid), 30, "the requeued message to be decided")
    assert doc["delivered"] is True and HOLD not in doc
    assert receiver.requests == 6
    assert metrics.value(queue.connection, metrics.RETRIES, schedule="slow") == 0
    assert queue.failed_job_registry.count == 0


def test_parked_messages_whose_failed_jobs_expired_are_requeued_from_mongodb_once_fixed(service, db, queue, receiver):
    # Given two messages parked for bad data (no sender_id: no JWT can be made for them)
    service.spawn("watch")
    service.spawn("work", "--simple")
    mids = [factories.message(db, sender_id=None) for _ in range(2)]
    for mid in mids:
        factories.communication(db, mid)
    for mid in mids:
        wait_until(lambda mid=mid: db.support_messages.find_one({"_id": mid, f"{HOLD}.kind": "parked"}), 30,
                   "the message parked")
    # and their failed jobs gone from RQ, as after FAILURE_TTL
    wait_until(lambda: queue.failed_job_registry.count == 2, 10, "both failed jobs")
    for jid in queue.failed_job_registry.get_job_ids():
        Job.fetch(jid, connection=queue.connection).delete()
    assert queue.failed_job_registry.count == 0
    # status still names them
    report = json.loads(service.run("status", "--json").stdout)
    assert sorted(report["messages"]["parked_messages"]) == sorted(str(m) for m in mids)
    # When their data is fixed (no event: the watcher follows inserts of messages) and an operator requeues
    # the first by id, then all that are parked
    for mid in mids:
        db.support_messages.update_one({"_id": mid}, {"$set": {"sender_id": ObjectId()}})
    first = json.loads(service.run("requeue", "--parked", str(mids[0]), "not-an-id").stdout)
    assert (first["requeued"], first["not_parked"]) == (1, ["not-an-id"])
    assert wait_until(lambda: decided(db, mids[0]), 30, "the first message")["delivered"] is True
    assert db.support_messages.find_one({"_id": mids[1], f"{HOLD}.kind": "parked"}), "the other stays parked"
    rest = json.loads(service.run("requeue", "--parked").stdout)
    assert rest["messages"] == [str(mids[1])]
    # Then each is decided once, with one emit
    assert wait_until(lambda: decided(db, mids[1]), 30, "the second message")["delivered"] is True
    assert sorted(e.message_id for e in receiver.emits) == sorted(str(m) for m in mids)
    assert json.loads(service.run("requeue", "--parked").stdout)["requeued"] == 0


def test_a_job_that_times_out_is_run_again(service, db, queue, receiver):
    # Given a job with a 2 s timeout whose emit takes 5 s
    receiver.behaviour.delay = 5
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work")
    service.spawn("schedule", SWEEP_INTERVAL="1")
    queue.enqueue(JOB_FUNCTION, str(mid), job_id=job_id(str(mid)), job_timeout=2, result_ttl=0)
    wait_until(lambda: receiver.requests >= 1, 20, "the job to reach the emit")
    receiver.behaviour.delay = 0
    # When it times out, stopped from outside rather than concluding anything itself
    # Then it is run again and the message decided; nothing is left failed for good
    doc = wait_until(lambda: decided(db, mid), 30, "the message to be decided after the timeout")
    assert doc["delivered"] is True
    failed = queue.failed_job_registry.get_job_ids()
    assert not any(Job.fetch(j, connection=queue.connection).meta.get(FINAL) for j in failed)


def test_a_worker_killed_mid_job_has_its_message_decided_within_15_seconds_at_default_settings(
    service, db, queue, receiver
):
    # Given default CLAIM_TTL (60 s) and SWEEP_INTERVAL (5 s), and a forking worker hanging in an emit
    receiver.behaviour.delay = 30
    mid = factories.message(db)
    factories.communication(db, mid)
    worker = service.spawn("work", "--fork")
    service.spawn("schedule")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: receiver.requests == 1, 20, "the job to reach the emit")
    service.spawn("work")
    wait_until(lambda: len(Worker.all(connection=queue.connection)) >= 2, 20, "the second worker to be up")
    receiver.behaviour.delay = 0
    # When the worker and its work horse are SIGKILLed
    service.kill(worker)
    killed = time.monotonic()
    # Then the message is decided within 15 s, its dead claim taken over
    doc = wait_until(lambda: decided(db, mid), 15, "the killed worker's message to be decided")
    print(f"decided {time.monotonic() - killed:.1f}s after the kill")
    assert doc["delivered"] is True and CLAIM not in doc
    assert metrics.value(queue.connection, metrics.TAKEOVERS) == 1


def test_a_nine_second_emit_keeps_its_message_and_is_not_duplicated(service, db, queue, receiver):
    # Given an emit that takes 9 s, two workers and sweeps every second
    receiver.behaviour.delay = 9
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", "--workers", "2", "--simple")
    service.spawn("schedule", SWEEP_INTERVAL="1")
    Enqueuer(queue).enqueue(str(mid))
    # When it completes
    doc = wait_until(lambda: decided(db, mid), 30, "the message to be decided")
    # Then it was made once: no sweep took the message from its slow but living job
    assert doc["delivered"] is True
    assert receiver.requests == 1 and len(receiver.emits_for(str(mid))) == 1
    assert metrics.value(queue.connection, metrics.TAKEOVERS) == 0


def test_every_emit_carries_an_idempotency_key_naming_the_message_and_its_log(service, db, queue, receiver):
    mid = factories.message(db)
    cid = factories.communication(db, mid)
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    emit = wait_until(lambda: receiver.emits_for(str(mid)), 20, "the emit")[0]
    assert emit.headers["idempotency-key"] == f"{mid}:{cid}"


def test_the_database_stopped_mid_job_schedules_a_retry_that_decides_the_message_once_it_is_back(
    service, db, queue, receiver, mongo_server
):
    # Given a worker that reaches MongoDB through a relay, and an emit that takes a second
    relay = Relay(mongo_server.port)
    url = f"mongodb://{relay.url_host}/{service.database}?directConnection=true&serverSelectionTimeoutMS=1000"
    receiver.behaviour.delay = 1
    mid = factories.message(db)
    factories.communication(db, mid)
    try:
        service.spawn("work", MONGO_DB_URL=url)
        service.spawn("schedule")  # moves retries; reaches the database directly
        Enqueuer(queue).enqueue(str(mid))
        wait_until(lambda: receiver.requests == 1, 20, "the job to reach the emit")
        # When the database goes away mid-job (its commit and the claim's release both fail)
        relay.down()
        wait_until(lambda: queue.scheduled_job_registry.count == 1, 20, "the job to schedule its retry")
        receiver.behaviour.delay = 0
        relay.up()
        # Then the retry decides the message once the database is back; nothing failed
        doc = wait_until(lambda: decided(db, mid), 30, "the message to be decided")
    finally:
        relay.close()
    assert doc["delivered"] is True
    assert queue.failed_job_registry.count == 0
    assert metrics.value(queue.connection, metrics.RETRIES, schedule="fast") >= 1


def test_a_connection_dropped_while_a_retry_moves_leaves_no_orphan_and_the_message_is_decided(
    service, db, queue, receiver, redis_server
):
    # Given a message whose retry is due, and a scheduler that reaches Redis through a relay
    mid = factories.message(db)
    factories.communication(db, mid)
    Enqueuer(queue).enqueue(str(mid))
    job = Job.fetch(job_id(str(mid)), connection=queue.connection)
    queue.remove(job)
    queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=2))
    relay = Relay(redis_server.port)
    # When the scheduler's connection drops right after it removes the retry from the registry
    relay.trip_on(b"rq:scheduled:support_message_status_queue")
    try:
        service.spawn("schedule", REDIS_URL=f"redis://{relay.url_host}/0")
        assert relay.tripped.wait(20), "the scheduler never moved the retry"
        service.spawn("work")
        # Then the job was either moved whole or not at all, and the message is decided
        doc = wait_until(lambda: decided(db, mid), 30, "the message to be decided")
    finally:
        relay.close()
    assert doc["delivered"] is True
    # and no orphaned job is left to answer "waiting" for the message (finished jobs are not kept)
    wait_until(lambda: not Job.exists(job_id(str(mid)), connection=queue.connection), 10, "its job to be gone")
    assert Enqueuer(queue).enqueue(str(mid)) == "enqueued"


def test_two_watchers_through_a_redis_partition_never_both_stream_for_more_than_a_second(service, redis_server):
    # Given an active watcher that reaches Redis through a relay, and a standby that reaches it directly
    relay = Relay(redis_server.port)
    r = redis.Redis.from_url(service.redis_url)
    try:
        first = service.spawn("watch", REDIS_URL=f"redis://{relay.url_host}/0", LOG_FORMAT="json")
        wait_until(lambda: r.hget("msgstatus:watcher:stream:communications", "token"), 30, "the first watcher")
        second = service.spawn("watch", LOG_FORMAT="json")
        assert 0 < r.ttl("msgstatus:watcher:state") <= 15  # the state expires with its writer
        time.sleep(2)  # the standby is up and polling for the lock
        # When the first one's Redis goes silent (a partition: requests hang, nothing is refused)
        relay.pause()
        wait_until(lambda: b"is active" in _log(service, second), 30, "the standby to take over")
        relay.resume()
        time.sleep(2)
    finally:
        relay.close()
        r.close()
    # Then the first one's streams had closed before the second one's opened, or at most a second after
    closed = [e["time"] for e in _events(service, first) if "closed (term 1)" in e["message"]]
    opened = [e["time"] for e in _events(service, second) if "is active" in e["message"]]
    assert len(closed) == 2 and opened, (closed, opened)
    overlap = (max(map(_when, closed)) - _when(opened[0])).total_seconds()
    print(f"overlap of the two watchers' streams: {overlap:.3f}s (negative: none)")
    assert overlap <= 1.0


def _log(service, process) -> bytes:
    return service.logs[service.processes.index(process)].read_bytes()


def _events(service, process) -> list[dict]:
    lines = _log(service, process).decode(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_the_seeds_update_replaces_a_metadata_that_is_not_an_object_and_nan_is_sent_as_null(
    service, db, queue, receiver
):
    # Given messages whose metadata is missing, a string, an array, and one carrying NaN and Infinity
    odd = {
        "missing": factories.message(db, metadata=None),
        "string": factories.message(db, metadata="legacy"),
        "array": factories.message(db, metadata=[{"a": 1}]),
        "nan": factories.message(db, score=float("nan"), metadata={"ratio": float("inf")}),
    }
    db.support_messages.update_one({"_id": odd["missing"]}, {"$unset": {"metadata": ""}})
    logs = {name: factories.communication(db, mid) for name, mid in odd.items()}
    service.spawn("work")
    for mid in odd.values():
        Enqueuer(queue).enqueue(str(mid))
    # When they are decided
    for name, mid in odd.items():
        doc = wait_until(lambda mid=mid: decided(db, mid), 20, f"the message with {name} metadata")
        # Then each is delivered, with metadata as the seed's update leaves it
        assert doc["delivered"] is True
        expected = {"ratio": float("inf"), "communication_id": logs[name]} if name == "nan" else {
            "communication_id": logs[name]}
        assert doc["metadata"] == expected, name
    emit = wait_until(lambda: receiver.emits_for(str(odd["nan"])), 5, "the emit")[0]
    assert emit.body["data"]["score"] is None and emit.body["data"]["metadata"]["ratio"] is None


def test_a_decision_removes_the_polling_jobs_stale_in_progress_flag(service, db, queue, receiver):
    mid = factories.message(db, status_queue_in_progress=True)
    factories.communication(db, mid, success=False)
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    doc = wait_until(lambda: decided(db, mid), 20, "the message to be decided")
    assert doc["delivered"] is False and "status_queue_in_progress" not in doc


def test_status_shows_how_many_wait_for_slow_retries_and_since_when(service, db, queue, receiver):
    receiver.behaviour.status = 503
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", FAST_ATTEMPTS="1")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: held_for_retry(db) == 1, 20, "the message to wait for a slow retry")
    report = json.loads(service.run("status", "--json").stdout)
    assert report["messages"]["slow_retries"] == 1 and report["messages"]["parked"] == 0
    assert report["messages"]["oldest_slow_retry_age_seconds"] is not None
    stale = service.run("status", "--json", "--max-slow-retry-age", "0")
    assert stale.returncode == 1 and "wait for slow retries" in " ".join(json.loads(stale.stdout)["problems"])


def test_a_job_a_dying_worker_took_off_the_queue_is_queued_again_by_the_next_event_or_sweep(service, db, queue):
    # Given a message whose job a worker took off the queue (into RQ's intermediate list) and then died
    mid = factories.message(db)
    factories.communication(db, mid)
    enqueuer = Enqueuer(queue)
    enqueuer.enqueue(str(mid))
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)
    # (as RQ 3 does before the work horse marks the job started, the worker registered an execution)
    queue.connection.zadd(queue.started_job_registry.key, {f"{job_id(str(mid))}:an-execution": 9e9})
    assert queue.count == 0
    # When an event or a sweep asks for it while it is recent, it is left alone (a live worker may be starting it)
    assert enqueuer.enqueue(str(mid)) == "waiting"
    # and once it is older than the grace, it goes back on the queue, once
    _queued_a_minute_ago(queue, job_id(str(mid)))
    assert enqueuer.enqueue(str(mid)) == "enqueued"
    assert queue.get_job_ids() == [job_id(str(mid))]
    assert queue.connection.llen(queue.intermediate_queue_key) == 0
    assert queue.connection.zcard(queue.started_job_registry.key) == 0
    assert enqueuer.enqueue(str(mid)) == "waiting"


def test_a_follow_up_job_a_dying_worker_took_off_the_queue_is_queued_again_by_the_next_event(service, db, queue):
    # Given a message whose job is running, and whose follow-up job a worker took off the queue and then died
    mid = factories.message(db)
    enqueuer = Enqueuer(queue)
    enqueuer.enqueue(str(mid))
    running = Job.fetch(job_id(str(mid)), connection=queue.connection)
    queue.remove(running)
    running.set_status(JobStatus.STARTED)
    assert enqueuer.enqueue(str(mid)) == "follow-up"
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)
    assert queue.count == 0
    # When an event asks for it while it is recent, it is left alone
    assert enqueuer.enqueue(str(mid)) == "waiting"
    # and once it is older than the grace, the follow-up goes back on the queue, once
    _queued_a_minute_ago(queue, follow_up_id(str(mid)))
    assert enqueuer.enqueue(str(mid)) == "follow-up"
    assert queue.get_job_ids() == [follow_up_id(str(mid))]
    assert enqueuer.enqueue(str(mid)) == "waiting"


def _queued_a_minute_ago(queue, jid: str) -> None:
    """Date the job's enqueue a minute back: past the grace a live worker has to start it."""
    job = Job.fetch(jid, connection=queue.connection)
    job.enqueued_at = datetime.now(UTC) - timedelta(seconds=60)
    job.save()


def test_a_leader_whose_lock_renewals_are_slow_streams_again_once_they_are_quick(service, db, redis_server):
    # Given an active watcher that reaches Redis through a relay, with workers and no scheduler or sweep
    relay = Relay(redis_server.port)
    r = redis.Redis.from_url(service.redis_url)
    try:
        watcher = service.spawn("watch", REDIS_URL=f"redis://{relay.url_host}/0", LOG_FORMAT="json")
        wait_until(lambda: r.hget("msgstatus:watcher:stream:communications", "token"), 30, "the watcher")
        service.spawn("work")
        # When every Redis request takes 1.5 s for a while: renewals succeed, but too late to keep
        # the streams' lease, so they close although the lock stays the watcher's
        relay.slow(1.5)
        wait_until(lambda: b"closed (term 1)" in _log(service, watcher), 30, "the streams to close")
        relay.slow(0)
        # Then, with the lock renewed in time again, it streams again: a new pair is delivered by its events
        mid = factories.message(db)
        factories.communication(db, mid)
        doc = wait_until(lambda: decided(db, mid), 30, "the pair written after the slow spell to be decided")
    finally:
        relay.close()
        r.close()
    assert doc["delivered"] is True
    assert watcher.poll() is None
