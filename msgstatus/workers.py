"""RQ workers for status and sweep jobs."""

from __future__ import annotations

import logging

import redis
from rq import Queue, SimpleWorker, Worker

from jobs import context
from msgstatus.defaults import QUEUE, SWEEP_QUEUE
from msgstatus.settings import Settings

log = logging.getLogger(__name__)


def queues(connection: redis.Redis) -> list[Queue]:
    """Sweep queue first: a backlog of status jobs must not hold back the sweep."""
    return [Queue(SWEEP_QUEUE, connection=connection), Queue(QUEUE, connection=connection)]


def run_worker(settings: Settings, simple: bool = False, burst: bool = False) -> bool:
    """Run one RQ worker until SIGTERM/SIGINT (RQ's warm shutdown) or, with ``burst``, an empty queue."""
    settings.require_socket()
    context.install(settings)
    import jobs.status  # noqa: F401 - loaded once here, not in every forked work horse

    connection = redis.Redis.from_url(settings.redis_url)
    worker_class = SimpleWorker if simple else Worker
    worker = worker_class(queues(connection), connection=connection)
    log.info("%s %s listening on %s", worker_class.__name__, worker.name, ", ".join(q.name for q in worker.queues))
    try:
        # with_scheduler: RQ's own scheduler moves retries (jobs returned Retry) back onto the queue.
        return bool(worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level))
    finally:
        context.close()
        connection.close()
