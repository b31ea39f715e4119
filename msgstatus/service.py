"""``msgstatus run``: the whole service as supervised child processes."""

from __future__ import annotations

import logging
import os
import socket

from embedded.processes import msgstatus_argv
from msgstatus.settings import ConfigError, Settings
from msgstatus.supervisor import Child, Supervisor

log = logging.getLogger(__name__)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def run_all(
    settings: Settings, workers: int, simple: bool, mongo_port: int, redis_port: int, api_port: int
) -> None:
    """Start embedded servers (if nothing is configured), the watcher, workers and the scheduler."""
    env = dict(os.environ)
    children: list[Child] = []
    if settings.embedded_mongo:
        if not _port_is_free(mongo_port):
            raise ConfigError(
                f"port {mongo_port} is taken, so the embedded MongoDB cannot start there: set MONGO_DB_URL "
                "to use that server, or pass --mongo-port"
            )
        children.append(Child("mongo", msgstatus_argv("mongo", "--port", str(mongo_port)), port=mongo_port))
        env["MONGO_DB_URL"] = f"mongodb://127.0.0.1:{mongo_port}/{settings.database}?directConnection=true"
        env["APP_SECRET"] = settings.app_secret  # children see a configured URL; keep the embedded secret
    if settings.embedded_redis:
        if not _port_is_free(redis_port):
            raise ConfigError(
                f"port {redis_port} is taken, so the embedded Redis cannot start there: set REDIS_URL "
                "to use that server, or pass --redis-port"
            )
        children.append(Child("redis", msgstatus_argv("redis", "--port", str(redis_port)), port=redis_port))
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    if settings.sweep_only:
        env["SWEEP_ONLY"] = "1"
        log.info("sweep-only mode: no watcher; the sweep runs every %ds", settings.sweep_interval)
    else:
        children.append(Child("watcher", msgstatus_argv("watch"), env))
    extra = ["--simple"] if simple else []
    children += [Child(f"worker-{i + 1}", msgstatus_argv("work", *extra), env) for i in range(workers)]
    children.append(Child("scheduler", msgstatus_argv("schedule"), env))
    if api_port:
        children.append(Child("api", msgstatus_argv("api", "--port", str(api_port)), env))
    for child in children:
        child.env = env
    # One line per child start and exit, whatever LOG_LEVEL says for the rest.
    logging.getLogger("msgstatus.supervisor").setLevel(logging.INFO)
    Supervisor(children).run()
