"""The status job through real RQ workers, a real embedded MongoDB and a real HTTP receiver."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from bson import ObjectId
from rq import Queue
from rq.job import Job

from core.defaults import QUEUE
from jobs import budget
from jobs.messages import CLAIM, HOLD
from jobs.queueing import LAST_ERROR, Enqueuer, job_id
from tests import factories
from tests.conftest import SECRET
from tests.waiting import wait_until


def enqueue(queue: Queue, message_id: ObjectId) -> str:
    return Enqueuer(queue).enqueue(str(message_id))


def decided(db, message_id):
    return db.support_messages.find_one({"_id": message_id, "delivered": {"$exists": True}})


def job_done(queue: Queue, message_id) -> bool:
    """The job ran and left nothing behind (finished jobs are not kept)."""
    return not Job.exists(job_id(str(message_id)), connection=queue.connection) and queue.count == 0


def test_comm_log_arriving_after_message_marks_it_delivered(service, db, queue, receiver):
    # Given a tracked message, then its successful communication log
    mid = factories.message(db)
    cid = factories.communication(db, mid)
    service.spawn("work")
    # When its status job runs
    enqueue(queue, mid)
    # Then it is delivered, with the communication id, and exactly one emit says so
    doc = wait_until(lambda: decided(db, mid), 20, "the message to be decided")
    assert doc["delivered"] is True
    assert doc["metadata"] == {"agent": "a-1", "communication_id": cid}
    assert CLAIM not in doc
    wait_until(lambda: receiver.emits_for(str(mid)), 5, "the emit")
    (emit,) = receiver.emits_for(str(mid))
    comm = db.communications.find_one({"_id": cid})
    assert emit.body["event"] == "updateMessage"
    data = emit.body["data"]
    assert data["_id"] == str(mid) and data["delivered"] is True
    assert data["sender_id"] == str(doc["sender_id"])
    assert data["metadata"]["communication_id"] == str(cid)
    assert data["created"].endswith("Z") and len(data["created"]) == len("2026-01-01T00:00:00.000Z")
    assert emit.headers["x-account-id"] == str(comm["account_id"])
    assert emit.claims["conversation_id"] == str(doc["sender_id"])
    assert emit.claims["account_id"] == str(comm["account_id"])
    assert emit.claims["type"] == "team"
    assert emit.claims["exp"] - emit.claims["iat"] == 120


def test_message_arriving_after_its_comm_log_marks_it_delivered(service, db, queue, receiver):
    mid = ObjectId()
    factories.communication(db, mid)
    factories.message(db, _id=mid)
    service.spawn("work")
    enqueue(queue, mid)
    assert wait_until(lambda: decided(db, mid), 20, "the message to be decided")["delivered"] is True
    wait_until(lambda: receiver.emits_for(str(mid)), 5, "the emit")
    assert len(receiver.emits_for(str(mid))) == 1


@pytest.mark.parametrize("success", [False, "false", 0, 2, None, "TRUE", "True", "Yes", "truthy"])
def test_what_mongoose_does_not_cast_to_true_marks_it_not_delivered_and_sets_delivered_only(
    service, db, queue, receiver, success
):
    mid = factories.message(db)
    factories.communication(db, mid, success=success)
    service.spawn("work")
    enqueue(queue, mid)
    doc = wait_until(lambda: decided(db, mid), 20, "the message to be decided")
    # The seed's failure branch sets delivered: false and nothing else
    assert doc["delivered"] is False and doc["metadata"] == {"agent": "a-1"}
    wait_until(lambda: receiver.emits_for(str(mid)), 5, "the emit")
    assert receiver.emits_for(str(mid))[0].body["data"]["delivered"] is False


@pytest.mark.parametrize("success", ["true", 1, "1", "yes"])
def test_what_a_mongoose_boolean_casts_to_true_is_a_delivery(
    service, db, queue, receiver, success
):
    mid = factories.message(db)
    cid = factories.communication(db, mid, success=success)
    service.spawn("work")
    enqueue(queue, mid)
    doc = wait_until(lambda: decided(db, mid), 20, "the message to be decided")
    assert doc["delivered"] is True and doc["metadata"]["communication_id"] == cid


def test_a_successful_log_wins_over_a_failed_one(service, db, queue, receiver):
    mid = factories.message(db)
    factories.communication(db, mid, success=False)
    good = factories.communication(db, mid, success=True)
    factories.communication(db, mid, success=False)
    service.spawn("work")
    enqueue(queue, mid)
    doc = wait_until(lambda: decided(db, mid), 20, "the message to be decided")
    assert doc["delivered"] is True and doc["metadata"]["communication_id"] == good


def test_no_comm_log_leaves_the_message_untouched_and_emits_nothing(service, db, queue, receiver):
    mid = factories.message(db)
    before = db.support_messages.find_one({"_id": mid})
    service.spawn("work")
    enqueue(queue, mid)
    wait_until(lambda: job_done(queue, mid), 20, "the job to finish")
    assert db.support_messages.find_one({"_id": mid}) == before
    assert receiver.requests == 0


def test_messages_of_other_senders_or_sources_or_already_decided_are_never_touched(service, db, queue, receiver):
    others = [
        factories.message(db, sender_type="contact"),
        factories.message(db, source="chat"),
        factories.message(db, delivered=False),
    ]
    for mid in others:
        factories.communication(db, mid)
    before = {mid: db.support_messages.find_one({"_id": mid}) for mid in others}
    service.spawn("work")
    for mid in others:
        enqueue(queue, mid)
    assert service.run("sweep", "--once").returncode == 0
    wait_until(lambda: all(job_done(queue, mid) for mid in others), 20, "the jobs to finish")
    assert {mid: db.support_messages.find_one({"_id": mid}) for mid in others} == before
    assert receiver.requests == 0


def test_socket_down_is_retried_then_delivered_once_it_is_back(service, db, queue, receiver):
    receiver.behaviour.fail_next = [503, 502]
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work")
    service.spawn("schedule")  # moves due retries onto the queue
    enqueue(queue, mid)
    # Attempt 1 fails, retry after 1 s fails, retry after 2 s succeeds.
    assert wait_until(lambda: decided(db, mid), 30, "the retried message to be decided")["delivered"] is True
    assert receiver.requests == 3
    assert len(receiver.emits_for(str(mid))) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_the_socket_service_asks_for_is_waited_out_before_the_next_attempt(
    service, db, queue, receiver, status
):
    # Given a socket service that sheds the first emit with Retry-After: 3 (the schedule's first wait is 1 s)
    receiver.behaviour.fail_next = [status]
    receiver.behaviour.retry_after = "3"
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", "--simple")
    service.spawn("schedule")  # moves due retries onto the queue
    enqueue(queue, mid)
    # Then the second attempt comes no sooner than it asked, and decides the message
    assert wait_until(lambda: decided(db, mid), 30, "the retried message")["delivered"] is True
    first, second = receiver.arrivals[:2]
    assert second - first >= 3.0, f"retried {second - first:.2f}s after a {status} that asked for 3 s"


@pytest.mark.parametrize("moved", [307, 308])
def test_a_307_or_308_redirect_is_followed_with_the_same_post_and_token(service, db, queue, receiver, moved):
    # Given a socket service that answers POST /emit with a redirect to another path of its own
    receiver.behaviour.moved = moved
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", "--simple")
    enqueue(queue, mid)
    # Then the emit is repeated there, its JWT verified, and the message decided at once
    assert wait_until(lambda: decided(db, mid), 20, "the message")["delivered"] is True
    assert len(receiver.emits_for(str(mid))) == 1 and receiver.rejected == []


def test_a_redirect_that_would_turn_the_post_into_a_get_is_retried_not_parked(service, db, queue, receiver):
    # Given a socket service that answers 301 (which a client follows with a GET, losing the emit)
    receiver.behaviour.moved = 301
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", "--simple")
    service.spawn("schedule")  # moves due retries onto the queue
    enqueue(queue, mid)
    # Then the attempt fails as an outside cause (retried, the redirect named), not as bad data
    job = wait_until(lambda: Job.exists(job_id(str(mid)), connection=queue.connection)
                     and Job.fetch(job_id(str(mid)), connection=queue.connection), 20, "the job")
    wait_until(lambda: job.refresh() or job.get_status() == "scheduled", 20, "a retry scheduled")
    assert "answered 301" in job.meta[LAST_ERROR] and "/moved/emit" in job.meta[LAST_ERROR]
    assert db.support_messages.find_one({"_id": mid}).get(HOLD) is None and queue.failed_job_registry.count == 0
    # and once the socket service stops redirecting, the retry decides it
    receiver.behaviour.moved = None
    assert wait_until(lambda: decided(db, mid), 20, "the retried message")["delivered"] is True


def test_socket_unreachable_is_retried_too(service, db, queue, receiver):
    mid = factories.message(db)
    factories.communication(db, mid)
    service.spawn("work", CONVERSATION_SOCKET="http://127.0.0.1:9")  # nothing listens on the discard port
    enqueue(queue, mid)
    job = wait_until(
        lambda: Job.exists(job_id(str(mid)), connection=queue.connection)
        and Job.fetch(job_id(str(mid)), connection=queue.connection).get_status() == "scheduled",
        20, "the job to be scheduled for a retry",
    )
    assert job
    assert db.support_messages.find_one({"_id": mid}).get("delivered") is None


def test_a_message_the_socket_service_refuses_as_bad_is_parked_in_the_failed_registry_untouched(
    service, db, queue, receiver
):
    # Given a socket service that answers 422 (it refuses the message's content)
    receiver.behaviour.status = 422
    mid = factories.message(db)
    factories.communication(db, mid)
    before = db.support_messages.find_one({"_id": mid})
    service.spawn("work")
    # When its job runs
    enqueue(queue, mid)
    # Then it fails at once, named, and the message is untouched but for the parked mark
    registry = Queue(QUEUE, connection=queue.connection).failed_job_registry
    wait_until(lambda: job_id(str(mid)) in registry.get_job_ids(), 20, "the job in the failed registry")
    job = Job.fetch(job_id(str(mid)), connection=queue.connection)
    assert str(mid) in job.description and job.args == (str(mid),)
    assert "refused the message with 422" in job.latest_result().exc_string
    assert receiver.requests == 1
    after = db.support_messages.find_one({"_id": mid})
    assert after.pop(HOLD)["kind"] == "parked"
    assert after == before


def test_a_worker_killed_mid_job_leaves_a_claim_that_expires_and_the_next_sweep_finishes_it(
    service, db, queue, receiver
):
    receiver.behaviour.delay = 30  # the emit hangs: the worker is mid-job when killed
    mid = factories.message(db)
    factories.communication(db, mid)
    worker = service.spawn("work", "--fork", CLAIM_TTL="3")  # forking: the horse must die too
    enqueue(queue, mid)
    wait_until(lambda: receiver.requests == 1, 20, "the job to reach the emit")
    service.kill(worker)  # the work horse too: it is in a process group of its own
    claim = db.support_messages.find_one({"_id": mid})[CLAIM]
    assert claim["until"].replace(tzinfo=UTC) > datetime.now(UTC)
    receiver.behaviour.delay = 0
    service.spawn("work", CLAIM_TTL="3")
    service.spawn("schedule", SWEEP_INTERVAL="1")
    doc = wait_until(lambda: decided(db, mid), 30, "the message to be decided after the lease expired")
    assert doc["delivered"] is True and CLAIM not in doc
    assert len(receiver.emits_for(str(mid))) >= 1


def test_two_sweeps_at_once_make_one_emit_per_message(service, db, queue, receiver):
    mids = [factories.message(db) for _ in range(20)]
    for mid in mids:
        factories.communication(db, mid)
    a, b = service.spawn("sweep", "--once"), service.spawn("sweep", "--once")
    assert a.wait(30) == 0 and b.wait(30) == 0
    service.spawn("work")
    wait_until(lambda: all(decided(db, mid) for mid in mids), 30, "every message to be decided")
    wait_until(lambda: len(receiver.emits) >= 20, 5, "the emits")
    time.sleep(0.5)  # let any stray duplicate arrive before counting (it would fail the test)
    assert sorted(e.message_id for e in receiver.emits) == sorted(str(m) for m in mids)


def test_sweep_only_mode_looks_past_the_log_horizon(service, db, receiver):
    # Given a message two hours old whose log came late, and no watcher (so no event will bring it)
    mid = factories.message(db, created=datetime.now(UTC) - timedelta(hours=2))
    factories.communication(db, mid)
    env = {"SWEEP_ONLY": "1", "SWEEP_INTERVAL": "1"}
    # When the sweep-only deployment's sweeps run, Then one finds it, past LOG_HORIZON
    service.spawn("schedule", **env)
    service.spawn("work", "--simple", **env)
    assert wait_until(lambda: decided(db, mid), 20, "the message")["delivered"] is True


@pytest.mark.serial  # two sweep intervals is a bound on time
def test_sweep_only_mode_delivers_a_batch_of_200_within_two_sweep_intervals(service, db, receiver):
    # SimpleWorkers: forking ones take ~6 s for 200 jobs here (a fresh MongoClient per
    # horse), which with a sweep due up to 5 s after the last write can exceed 10 s.
    service.spawn("work", "--workers", "2", "--simple")
    service.spawn("schedule")
    with pymongo.MongoClient(service.mongo_url) as writer:
        wdb = writer[service.database]
        mids = [factories.message(wdb) for _ in range(200)]
        for mid in mids:
            factories.communication(wdb, mid)
        last_write = time.monotonic()
    wait_until(lambda: db.support_messages.count_documents({"delivered": True}) == 200, 30, "200 delivered")
    elapsed = time.monotonic() - last_write
    print(f"delivered {elapsed:.1f}s after the last write")
    assert elapsed <= 2 * 5, f"took {elapsed:.1f}s after the last write"
    assert len({e.message_id for e in receiver.emits}) == 200
    assert len(receiver.emits) == 200


def test_the_receiver_rejects_a_token_signed_with_another_secret(receiver):
    import httpx

    from jobs.emit import socket_token

    token = socket_token("c", "a", "another-secret-that-is-32-bytes-long!!")
    response = httpx.post(
        f"{receiver.url}/emit", json={"event": "updateMessage", "data": {"_id": "x"}},
        headers={"Authorization": f"Bearer {token}", "x-account-id": "a"},
    )
    assert response.status_code == 401 and not receiver.emits
    assert SECRET  # the receiver verifies with the test secret


def test_a_job_rq_failed_because_its_worker_died_is_enqueued_again_but_a_job_that_failed_itself_is_not(queue):
    # Given two failed jobs: one RQ marked failed when its worker vanished, one that concluded it failed
    from rq.job import JobStatus

    from jobs.queueing import FINAL

    enqueuer = Enqueuer(queue)
    died, gave_up = str(ObjectId()), str(ObjectId())
    for message_id in (died, gave_up):
        enqueuer.enqueue(message_id)
        job = Job.fetch(job_id(message_id), connection=queue.connection)
        queue.remove(job)
        if message_id == gave_up:
            job.meta[FINAL] = True
            job.save_meta()
        job.set_status(JobStatus.FAILED)
        queue.failed_job_registry.add(job, ttl=600)
    # When a sweep or an event asks for both again
    # Then only the abandoned one is queued again
    assert enqueuer.enqueue(died) == "enqueued"
    assert enqueuer.enqueue(gave_up) == "failed"
    assert queue.get_job_ids() == [job_id(died)]


def schedule_retry(queue: Queue, message_id: str, due: datetime) -> None:
    """Put the message's status job in the scheduled registry, as RQ does for a Retry."""
    Enqueuer(queue).enqueue(message_id)
    job = Job.fetch(job_id(message_id), connection=queue.connection)
    queue.remove(job)
    queue.schedule_job(job, due)


def test_a_retry_overdue_by_more_than_its_grace_is_enqueued_but_one_still_due_waits(queue):
    # Given three scheduled retries: due in a minute, due a moment ago, and long overdue
    from jobs.queueing import OVERDUE_RETRY

    now = datetime.now(UTC)
    ahead, late, abandoned = (str(ObjectId()) for _ in range(3))
    schedule_retry(queue, ahead, now + timedelta(seconds=60))
    schedule_retry(queue, late, now - timedelta(seconds=2))
    schedule_retry(queue, abandoned, now - timedelta(seconds=OVERDUE_RETRY + 5))
    enqueuer = Enqueuer(queue)
    # When a sweep asks for each again
    # Then only the long-overdue one is taken out of the registry and queued, once
    assert [enqueuer.enqueue(m) for m in (ahead, late, abandoned)] == ["waiting", "waiting", "enqueued"]
    assert enqueuer.enqueue(abandoned) == "waiting"
    assert queue.get_job_ids() == [job_id(abandoned)]
    assert set(queue.scheduled_job_registry.get_job_ids()) == {job_id(ahead), job_id(late)}


def test_a_retry_runs_on_time_while_a_worker_that_died_still_holds_rq_scheduler_lock(service, db, queue, receiver):
    # Given a message whose status job is to be retried in 3 s, in a queue whose RQ scheduler
    # lock is held by a worker that died (the lock outlives it by 61 s): no worker's RQ
    # scheduler will move the retry
    from rq.scheduler import RQScheduler

    mid = factories.message(db)
    factories.communication(db, mid)
    schedule_retry(queue, str(mid), datetime.now(UTC) + timedelta(seconds=3))
    queue.connection.set(RQScheduler.get_locking_key(QUEUE), "a-worker-that-died", ex=61)
    # When a worker and `msgstatus schedule` run
    service.spawn("work")
    service.spawn("schedule")
    # Then the retry runs when due, long before the lock expires or a sweep finds it overdue (15 s)
    doc = wait_until(lambda: decided(db, mid), 12, "the message to be decided")
    assert doc["delivered"] is True
    assert queue.connection.get(RQScheduler.get_locking_key(QUEUE)) == b"a-worker-that-died"


def test_retries_waiting_on_the_socket_run_as_soon_as_it_answers_again(service, db, queue, receiver):
    # Given the socket service failing: one message's emit fails, and another's retry waits a minute
    receiver.behaviour.status = 503
    failing, waiting, fresh = (factories.message(db) for _ in range(3))
    for mid in (failing, waiting, fresh):
        factories.communication(db, mid)
    schedule_retry(queue, str(waiting), datetime.now(UTC) + timedelta(seconds=60))
    service.spawn("work")
    enqueue(queue, failing)
    wait_until(lambda: receiver.requests >= 1 and queue.scheduled_job_registry.count >= 2, 20, "a failed emit")
    # When the socket service answers again, no attempt has failed for a while (the outage is over, not
    # a pause between failures), and a new message is emitted
    receiver.behaviour.status = 200
    wait_until(lambda: not queue.connection.exists(budget.RECENT_KEY), budget.QUIET + 10, "the failures to stop")
    enqueue(queue, fresh)
    # Then the waiting retry runs at once, not in a minute
    wait_until(lambda: decided(db, fresh), 20, "the new message")
    wait_until(lambda: decided(db, waiting), 15, "the retry that was to wait a minute")
    wait_until(lambda: decided(db, failing), 15, "the message whose emit failed")
    wait_until(lambda: "scheduled retries enqueued now" in service.log_text(), 10, "the wake-up's log line")


def test_a_success_amid_failures_wakes_nothing_and_each_retry_keeps_its_schedule(service, db, queue, receiver):
    # Given a retry due in a minute, and a socket service shedding load: one emit fails
    receiver.behaviour.fail_next = [503]
    waiting, failing, fresh = (factories.message(db) for _ in range(3))
    for mid in (waiting, failing, fresh):
        factories.communication(db, mid)
    schedule_retry(queue, str(waiting), datetime.now(UTC) + timedelta(seconds=60))
    service.spawn("work", "--simple")
    enqueue(queue, failing)
    wait_until(lambda: receiver.requests >= 1 and queue.scheduled_job_registry.count >= 2, 20, "a failed emit")
    # When another message's emit succeeds right after that failure, and its job is done
    enqueue(queue, fresh)
    wait_until(lambda: decided(db, fresh) and job_done(queue, fresh), 20, "the new message's job")
    # Then nothing was woken: the retries keep their own schedules
    assert {job_id(str(waiting)), job_id(str(failing))} <= set(queue.scheduled_job_registry.get_job_ids())
    assert decided(db, waiting) is None
    assert "scheduled retries enqueued now" not in service.log_text()
