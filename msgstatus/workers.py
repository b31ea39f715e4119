"""RQ workers for status and sweep jobs."""

from __future__ import annotations

import logging

import redis
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.worker import BaseWorker, WorkerStatus

from core.defaults import SWEEP_QUEUE
from core.outage import wait_for_redis
from core.settings import Settings
from jobs import context
from jobs.queueing import status_queues

log = logging.getLogger(__name__)


class _StopsWhenIdle(BaseWorker):
    """A warm stop of an idle worker that holds even if the exception RQ raises for it is lost.

    RQ's signal handler stops an idle worker by raising StopRequested wherever the
    worker happens to be; raised inside code that catches and moves on, it is
    lost, and the worker takes the next job and waits for another, deaf to the
    stop until a second signal. The request is also kept as the flag RQ's loop
    checks before each dequeue, and raised again after each round of maintenance.
    """

    def _shutdown(self) -> None:
        self._stop_requested = True
        super()._shutdown()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        if self._stop_requested and self.get_state() != WorkerStatus.BUSY:
            raise StopRequested()


class StatusWorker(_StopsWhenIdle, Worker):
    """RQ's forking worker (a work horse per job)."""


class SimpleStatusWorker(_StopsWhenIdle, SimpleWorker):
    """RQ's SimpleWorker (jobs run in the worker process)."""


def queues(connection: redis.Redis) -> list[Queue]:
    """Sweep queue first: a backlog of status jobs must not hold back the sweep."""
    return [Queue(SWEEP_QUEUE, connection=connection), *status_queues(connection)]


def run_worker(settings: Settings, simple: bool = False, burst: bool = False) -> bool:
    """Run one RQ worker until SIGTERM/SIGINT (RQ's warm shutdown) or, with ``burst``, an empty queue."""
    settings.require_socket()
    context.install(settings)
    import jobs.status  # noqa: F401 - loaded once here, not in every forked work horse

    connection = redis.Redis.from_url(settings.redis_url)
    worker_class: type[BaseWorker] = SimpleStatusWorker if simple else StatusWorker
    try:
        while True:
            worker = worker_class(queues(connection), connection=connection)
            log.info("%s %s listening on %s", worker_class.__name__, worker.name,
                     ", ".join(q.name for q in worker.queues))
            try:
                # No RQ scheduler in workers: `msgstatus schedule` moves due retries (jobs.retries), atomically.
                worked = worker.work(with_scheduler=False, burst=burst, logging_level=settings.log_level)
            except redis.exceptions.ConnectionError:
                worked = False  # raised by RQ's teardown while Redis is away
            # RQ notes the time of a SIGTERM/SIGINT (warm shutdown) whether or not a job was running.
            if burst or worker._shutdown_requested_date is not None:
                return bool(worked)
            # RQ's loop ends on errors it does not retry itself, such as Redis going away
            # during its maintenance: wait for Redis and start a fresh worker.
            log.warning("worker %s stopped on an error; a new worker starts once Redis answers", worker.name)
            if not wait_for_redis(connection, f"worker {worker.name}"):
                return bool(worked)
    finally:
        context.close()
        connection.close()
