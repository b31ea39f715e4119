"""Messages that arrive together are decided in batches, and every per-message promise holds inside one."""

from __future__ import annotations

import ast
import re
import time

from rq.job import Job

from core import metrics
from jobs import batch
from jobs.queueing import Enqueuer, job_id, mark
from tests import factories
from tests.conftest import APP, commands_sent
from tests.test_replica_failures import all_decided_once
from tests.waiting import settled, wait_until


def pairs(db, count: int, **comm) -> list:
    mids = [factories.message(db) for _ in range(count)]
    for mid in mids:
        factories.communication(db, mid, **comm)
    return mids


def decided_at(db, mids) -> int:
    return db.support_messages.count_documents({"_id": {"$in": mids}, "delivered": {"$exists": True}})


def test_messages_arriving_together_are_decided_in_batch_jobs_with_one_emit_each(service, db, queue, receiver):
    # Given 120 messages with their logs, enqueued together (as a sweep or a burst of events does)
    mids = pairs(db, 120)
    outcomes = Enqueuer(queue).enqueue_many([str(m) for m in mids])
    assert outcomes == {"enqueued": 120}
    # Then they wait in 3 batch jobs, each message marked so that it never waits twice
    assert queue.count == 3
    assert Enqueuer(queue).enqueue_many([str(m) for m in mids[:10]]) == {"waiting": 10}
    # When a worker runs them
    service.spawn("work")
    wait_until(lambda: decided_at(db, mids) == 120, 30, "all 120 to be decided")
    # Then each was emitted once, by 3 jobs, and no mark is left
    wait_until(lambda: len(receiver.emits) >= 120, 5, "the emits")
    assert sorted(e.message_id for e in receiver.emits) == sorted(str(m) for m in mids)
    r = queue.connection
    wait_until(lambda: metrics.value(r, metrics.BATCHES) == 3, 5, "the three batch jobs to count what they did")
    assert metrics.value(r, metrics.BATCHED) == 120
    assert metrics.value(r, metrics.DECIDED, delivered="true") == 120
    assert not any(queue.connection.exists(mark(str(m))) for m in mids)


def test_a_failed_and_a_slow_emit_in_a_batch_leave_their_neighbours_alone(service, db, queue, receiver):
    # Given a batch of 20 in which one message's emit gets a 500 and another's takes 3 s
    mids = pairs(db, 20)
    failing, slow = str(mids[3]), str(mids[7])
    receiver.behaviour.by_message = {failing: (500, 0.0), slow: (200, 3.0)}
    service.spawn("schedule")  # moves the failed one's retry
    # It creates the indexes at start: one created while the slow emit's transaction is open makes that
    # commit conflict (the message is then retried and emitted again, as at-least-once allows)
    wait_until(lambda: "sweep scheduled" in service.log_text(), 20, "the scheduler's indexes")
    service.spawn("work")
    Enqueuer(queue).enqueue_many([str(m) for m in mids])
    # When they are all decided: the slow one once its emit returns, the failed one by a retry of its own
    wait_until(lambda: decided_at(db, mids) == 20, 30, "all 20 messages")
    wait_until(lambda: len(receiver.emits) >= 20, 5, "the emits")
    # Then each of the 18 others was emitted before the slow emit returned, and none twice
    at = {e.message_id: e.received for e in receiver.emits}
    others = [str(m) for m in mids if str(m) not in (failing, slow)]
    assert all(at[m] < at[slow] for m in others), "a neighbour waited for the slow emit"
    wait_until(lambda: metrics.value(queue.connection, metrics.RETRIES, schedule="fast") == 1, 5,
               "the one retry counted")
    emitted = [e.message_id for e in receiver.emits]
    assert sorted(emitted) == sorted(str(m) for m in mids), "a neighbour was emitted again"


def test_bad_data_in_a_batch_goes_to_its_own_job_in_the_failed_registry_and_the_rest_are_decided(
    service, db, queue, receiver
):
    mids = pairs(db, 10)
    bad = factories.message(db)
    factories.communication(db, bad, account_id=None)
    service.spawn("work")
    Enqueuer(queue).enqueue_many([str(m) for m in [*mids, bad]])
    wait_until(lambda: decided_at(db, mids) == 10, 20, "the good ten")
    wait_until(lambda: job_id(str(bad)) in queue.failed_job_registry.get_job_ids(), 20, "the bad one's own job")
    job = Job.fetch(job_id(str(bad)), connection=queue.connection)
    assert "has no account_id" in job.latest_result().exc_string
    assert db.support_messages.find_one({"_id": bad})["status_hold"]["kind"] == "parked"


def test_a_worker_killed_mid_batch_loses_nothing_and_emits_again_only_what_it_had_emitted_undecided(
    service, db, queue, receiver
):
    # Given a batch of 40 whose emits take half a second each, eight at a time
    receiver.behaviour.delay = 0.5
    mids = pairs(db, 40)
    worker = service.spawn("work")
    service.spawn("schedule")
    Enqueuer(queue).enqueue_many([str(m) for m in mids])
    wait_until(lambda: receiver.requests >= 10, 20, "the batch to be under way")
    # When the worker is SIGKILLed mid-batch
    service.kill(worker)
    # Requests it sent before it died may still be on their way into the receiver: they land before the
    # next worker starts, so that each counts as sent before the kill
    settled(lambda: receiver.requests, 0.3, 5, "the killed worker's last requests to land")
    killed = time.time()
    decided_before = {d["_id"] for d in db.support_messages.find({"_id": {"$in": mids}, "delivered": True})}
    receiver.behaviour.delay = 0
    service.spawn("work")
    # Then every message is decided, and only messages emitted before the kill but not yet decided
    # (the documented at-least-once window, at most one wave's places) are emitted twice
    wait_until(lambda: decided_at(db, mids) == 40, 30, "all 40 to be decided")
    wait_until(lambda: {e.message_id for e in receiver.emits} >= {str(m) for m in mids}, 5, "every emit")
    emits: dict[str, list[float]] = {}
    for e in receiver.emits:
        emits.setdefault(e.message_id, []).append(e.arrived)
    twice = {mid: times for mid, times in emits.items() if len(times) > 1}
    for mid, times in twice.items():
        assert min(times) <= killed, f"{mid} was emitted twice without having been emitted before the kill"
        assert mid not in {str(m) for m in decided_before}, f"{mid} was emitted again after its decision"
    assert len(twice) <= batch.CONCURRENCY, f"{len(twice)} emitted undecided at once, over {batch.CONCURRENCY}"
    print(f"{len(twice)} of 40 emitted twice (in flight when the worker was killed)")


def test_a_batch_behind_a_hanging_socket_service_starts_no_decision_its_claims_could_not_outlast(
    service, db, queue, receiver
):
    # Given 16 messages in one batch job, claims that last 22 s, and a socket service that answers no emit
    # within the emit's 10 s timeout
    receiver.behaviour.delay = 15.0
    mids = pairs(db, 16)
    Enqueuer(queue).enqueue_many([str(m) for m in mids])
    assert len(queue.job_ids) == 1
    # When a worker runs the batch: 8 decisions at a time, each emit timing out after 10 s
    service.spawn("work", "--simple", CLAIM_TTL="22")
    line = wait_until(lambda: re.search(r"batch of 16: (\{.*?\})", service.log_text()), 40, "the batch's line")
    # Then the 8 that would have started 10 s in, with 12 s of their claims left (less than an attempt may
    # take), went to jobs of their own instead of emitting on a claim that could run out under them
    result = ast.literal_eval(line.group(1))
    assert (result.get("retried"), result.get("handed-off")) == (8, 8), result
    receiver.behaviour.delay = 0.0


def commits(client) -> int:
    """Transactions the service's processes committed so far."""
    return commands_sent(client, APP, "commitTransaction")


def test_a_batchs_decisions_are_committed_together_in_waves(service, db, queue, receiver, client):
    # Given 40 messages with their logs in one batch job
    mids = pairs(db, 40)
    assert Enqueuer(queue).enqueue_many([str(m) for m in mids]) == {"enqueued": 40}
    before = commits(client)
    # When a worker runs it
    service.spawn("work", "--simple", MONGO_DB_URL=f"{service.mongo_url}&appName={APP}")
    wait_until(lambda: decided_at(db, mids) == 40, 30, "all 40 to be decided")
    # Then the decisions took far fewer transactions than messages, and each message was emitted once
    assert commits(client) - before <= 40 // 2
    wait_until(lambda: len(receiver.emits) >= 40, 5, "the emits")
    assert sorted(e.message_id for e in receiver.emits) == sorted(str(m) for m in mids)


def test_a_wave_whose_commit_fails_leaves_its_messages_to_be_tried_again_each_on_its_own(
    service, db, queue, receiver, fail_point
):
    # Given a batch of 20 and the first commit of the service's transactions failing (a wave's)
    mids = pairs(db, 20)
    fail_point({"times": 1}, failCommands=["commitTransaction"], errorCode=112)
    env = {"MONGO_DB_URL": f"{service.mongo_url}&appName={APP}"}
    service.spawn("schedule", **env)  # moves the retries
    service.spawn("work", "--simple", **env)
    # When it runs
    Enqueuer(queue).enqueue_many([str(m) for m in mids])
    # Then every message is decided once; those of the failed wave were emitted again under the same key
    all_decided_once(service, db, receiver, mids, 60)
    assert fail_point("off") == 1


def test_a_batch_whose_commits_are_slow_never_has_more_than_one_wave_of_messages_emitted_and_undecided(
    service, db, queue, receiver, fail_point
):
    # Given 40 messages in one batch job, and each commit of the service's transactions held up 300 ms
    mids = pairs(db, 40)
    fail_point("alwaysOn", failCommands=["commitTransaction"], blockConnection=True, blockTimeMS=300)
    Enqueuer(queue).enqueue_many([str(m) for m in mids])
    # When a worker runs it
    service.spawn("work", "--simple", MONGO_DB_URL=f"{service.mongo_url}&appName={APP}")
    # Then, all along, at most one wave's places of messages are emitted and not yet decided (what a worker
    # killed at that moment would leave to be emitted again)
    most = 0

    def all_decided() -> bool:
        nonlocal most
        emitted = len({e.message_id for e in receiver.emits})  # read first: a decided message was emitted before
        decided = decided_at(db, mids)
        most = max(most, emitted - decided)
        return decided == 40

    wait_until(all_decided, 60, "all 40 to be decided", interval=0.02)
    assert most <= batch.CONCURRENCY, f"{most} messages were emitted and undecided at once"
    assert fail_point("off") >= 40 // batch.CONCURRENCY
