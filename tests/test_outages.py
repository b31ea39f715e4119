"""Redis going away and coming back empty: the processes ride it out and the safety net stays."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
import redis
from rq import Queue
from rq.exceptions import StopRequested

from core.defaults import SWEEP_QUEUE
from embedded.processes import free_port
from jobs import wakeup
from msgstatus.workers import SimpleStatusWorker, StatusWorker
from tests import factories
from tests.conftest import Service, start_redis
from tests.waiting import wait_until


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, which it may kill."""
    server = start_redis()
    yield server
    server.stop()


def test_redis_restarted_empty_keeps_worker_and_scheduler_running_and_the_sweep_scheduled(
    service, client, receiver, own_redis
):
    # Given a worker and the 1 s sweep (sweep-only: no watcher) on a Redis of their own
    svc = Service({**service.env, "REDIS_URL": own_redis.url, "SWEEP_INTERVAL": "1"},
                  service.mongo_url, own_redis.url, service.database)
    db = client[service.database]
    worker, scheduler = svc.spawn("work"), svc.spawn("schedule")
    try:
        first = factories.message(db)
        factories.communication(db, first)
        wait_until(lambda: db.support_messages.find_one({"_id": first, "delivered": True}), 20, "a first delivery")
        # When Redis is killed and, a few seconds later, started again empty on the same port
        before = len(svc.log_text())
        os.kill(own_redis.pid, signal.SIGKILL)
        own_redis.process.wait()
        wait_until(lambda: "Redis" in svc.log_text()[before:] or scheduler.poll() is not None, 20,
                   "the processes to notice")
        restarted = start_redis(port=own_redis.port)
        try:
            # Then both processes are still running, the sweep is scheduled again, and a new message is delivered
            second = factories.message(db)
            factories.communication(db, second)
            wait_until(lambda: db.support_messages.find_one({"_id": second, "delivered": True}), 30,
                       "a delivery after the restart")
            assert worker.poll() is None and scheduler.poll() is None
        finally:
            svc.stop_all()
            restarted.stop()
    finally:
        svc.stop_all()


def test_an_idle_worker_and_the_scheduler_stop_on_sigterm_and_exit_cleanly(service):
    # Given an idle worker and the scheduler (their outage handling must not swallow a stop)
    worker, scheduler = service.spawn("work"), service.spawn("schedule")
    wait_until(lambda: "Listening on" in service.log_text() and "sweep scheduled" in service.log_text(), 20,
               "both to start")
    # When each gets SIGTERM
    for process in (worker, scheduler):
        os.killpg(process.pid, signal.SIGTERM)
    # Then each exits at once, with 0
    assert worker.wait(10) == 0
    assert scheduler.wait(10) == 0


@pytest.mark.parametrize("worker_class", [SimpleStatusWorker, StatusWorker])
def test_an_idle_worker_whose_stop_request_was_caught_on_its_way_still_stops(redis_url, worker_class):
    # Given an idle worker whose stop request was caught by code that carried on (RQ's signal handler raises
    # it as an exception wherever the worker is, and a SIGTERM during its start-up maintenance was lost so)
    connection = redis.Redis.from_url(redis_url)
    worker = worker_class([Queue("lost-stop", connection=connection)], connection=connection)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with contextlib.suppress(StopRequested):
        worker._shutdown()
    # When it works on, nothing queued
    started = time.monotonic()
    try:
        worker.work(with_scheduler=False)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        connection.close()
    # Then it stops after its first round of maintenance, instead of waiting for a job
    assert time.monotonic() - started < 5


def test_the_scheduler_stopped_while_redis_is_away_exits_at_once(service, own_redis):
    # Given the scheduler on a Redis of its own
    svc = Service({**service.env, "REDIS_URL": own_redis.url}, service.mongo_url, own_redis.url, service.database)
    scheduler = svc.spawn("schedule")
    r = redis.Redis.from_url(own_redis.url)
    try:
        # (its first pass has enqueued the sweep: it is inside rq-scheduler's loop, with its signal handlers)
        wait_until(lambda: Queue(SWEEP_QUEUE, connection=r).count, 20, "the scheduler's first pass")
        # When Redis goes away and SIGTERM comes before the scheduler's next pass (it polls every second),
        # so that the stop meets the outage inside rq-scheduler's loop
        os.kill(own_redis.pid, signal.SIGKILL)
        own_redis.process.wait()
        os.killpg(scheduler.pid, signal.SIGTERM)
        # Then it stops all the same, at once and with 0, instead of waiting for Redis
        assert scheduler.wait(5) == 0, svc.log_text()
        assert "scheduler stopping (SIGTERM)" in svc.log_text()
    finally:
        r.close()
        svc.stop_all()


def test_a_wake_up_after_a_committed_decision_does_not_raise_when_redis_is_gone(client, db_name):
    # Given Redis gone (nothing listens where it was) at the moment a decision asks to wake what waits
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    # When the wake-up runs, Then it reports nothing woken instead of failing the decided message's job
    assert wakeup.succeeded(gone, client[db_name]) == 0
    gone.close()


def test_the_scheduler_queues_one_sweep_while_no_worker_takes_it(service):
    # Given the scheduler running with a 1-second sweep interval and no worker at all
    r = redis.Redis.from_url(service.redis_url)
    service.spawn("schedule", SWEEP_INTERVAL="1")
    first = wait_until(lambda: r.zscore("rq:scheduler:scheduled_jobs", "msgstatus-sweep"), 20, "the sweep scheduled")
    # When four more intervals have come
    wait_until(lambda: (r.zscore("rq:scheduler:scheduled_jobs", "msgstatus-sweep") or 0) >= first + 4, 20,
               "four more sweep intervals")
    # Then one sweep waits on its queue, not one per interval
    assert Queue(SWEEP_QUEUE, connection=r).job_ids == ["msgstatus-sweep"]
    r.close()
