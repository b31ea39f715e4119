"""Can RQ's JSON serializer replace pickle here, and would it close Redis as a way into the workers?

Each check runs the real pieces against a real redis-server: a SimpleWorker in burst mode, rq-scheduler
0.14's Scheduler scheduling the sweep as ``msgstatus schedule`` does, and rq-dashboard 0.9.0's Flask app
with its JSON option. Writes bench/serializer-results.md. Run: ``make serializer`` (~5 s).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from bench.report import stamp
from embedded.processes import free_port, wait_for_port
from embedded.redisserver import redis_argv

RESULTS = Path(__file__).with_name("serializer-results.md")


def _worker(connection: redis.Redis, queue: Queue) -> SimpleWorker:
    return SimpleWorker([queue], connection=connection, serializer=JSONSerializer)


def json_status_job(connection: redis.Redis) -> str:
    """A job with a message id for its argument, as ours are, through a JSON queue and worker."""
    queue = Queue("status", connection=connection, serializer=JSONSerializer)
    job = queue.enqueue("builtins.len", "6b0f52750b9d2747bba9d3dc")
    _worker(connection, queue).work(burst=True)
    job.refresh()
    return f"{job.get_status().value}, result {job.return_value()}"


def scheduler_into_json_queue(connection: redis.Redis) -> str:
    """rq-scheduler schedules into a JSON queue; a JSON worker takes the job (the sweep's path)."""
    queue = Queue("sweep", connection=connection, serializer=JSONSerializer)
    scheduler = Scheduler(queue=queue, connection=connection, interval=1)
    job = scheduler.schedule(scheduled_time=datetime.now(UTC).replace(tzinfo=None), func="builtins.len",
                             args=["sweep"], interval=5, repeat=None, id="sweep-json")
    scheduler.enqueue_jobs()
    stored = connection.hget(f"rq:job:{job.id}", "data") or b""
    try:
        Job.fetch(job.id, connection=connection, serializer=JSONSerializer).func_name  # noqa: B018
    except Exception as error:
        cause = error.__cause__ or error.__context__
        return (f"stored {'pickled' if stored[:1] in (b'x', b'\x80') else 'as JSON'} (rq-scheduler 0.14 "
                f"has no serializer option); a JSON worker cannot load it: {type(error).__name__} "
                f"({type(cause).__name__}: {cause})"[:300])
    return "a JSON worker loads it"


def dashboard_with_json(connection: redis.Redis, url: str) -> str:
    """rq-dashboard 0.9.0 with its JSON option lists a JSON job."""
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import config, setup_rq_connection

    queue = Queue("listed", connection=connection, serializer=JSONSerializer)
    job = queue.enqueue("builtins.len", "6b0f52750b9d2747bba9d3dc")
    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = url
    app.config["DEPRECATED_OPTIONS"] = []
    config.serializer = JSONSerializer
    setup_rq_connection(app)
    with app.test_client() as client:
        listed = client.get("/0/data/jobs/listed/queued/8/asc/1.json")
        shown = client.get(f"/0/data/job/{job.id}.json")
    return f"queue listing {listed.status_code}, job page {shown.status_code}, job found: {job.id in listed.text}"


def redis_writer_runs_code(connection: redis.Redis) -> str:
    """Whoever can write to Redis enqueues a job naming any importable function: a JSON worker runs it."""
    with tempfile.TemporaryDirectory() as scratch:
        proof = Path(scratch) / "written-by-a-job-from-redis"
        queue = Queue("status", connection=connection, serializer=JSONSerializer)
        queue.enqueue("pathlib.Path.touch", str(proof))  # any callable, any JSON arguments
        _worker(connection, queue).work(burst=True)
        return f"a JSON worker ran pathlib.Path.touch from a job written to Redis: file created = {proof.exists()}"


CHECKS: list[tuple[str, Callable[..., str]]] = [
    ("a status job (a message id argument) through a JSON queue and SimpleWorker", json_status_job),
    ("the sweep, scheduled by rq-scheduler 0.14 into a JSON queue", scheduler_into_json_queue),
    ("rq-dashboard 0.9.0 with its JSON option", dashboard_with_json),
    ("a job written to Redis by anyone who can, under the JSON serializer", redis_writer_runs_code),
]


def main() -> None:
    port = free_port()
    server = subprocess.Popen(redis_argv("127.0.0.1", port), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    rows = []
    try:
        wait_for_port("127.0.0.1", port, 10, server)
        for what, check in CHECKS:
            with redis.Redis.from_url(url) as connection:
                connection.flushall()
                found = check(connection, url) if check is dashboard_with_json else check(connection)
            rows.append(f"| {what} | {found} |")
            print(f"{what}: {found}")
    finally:
        server.terminate()
        server.wait(10)
    RESULTS.write_text(
        "# RQ's JSON serializer here\n\n" + stamp() + "\n\n| check | result |\n|---|---|\n" + "\n".join(rows)
        + "\n\nRerun: `make serializer`. What follows from it: README, \"Trust boundary\".\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
