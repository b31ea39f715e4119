"""``msgstatus run``: the whole service as supervised child processes."""

from __future__ import annotations

import logging
import os
import socket

from core.settings import ConfigError, Settings
from embedded.defaults import REPLICA_SET, mongo_missing
from embedded.processes import msgstatus_argv
from embedded.redisserver import RedisServerNotFound, redis_server_binary
from msgstatus.supervisor import Child, Supervisor

log = logging.getLogger(__name__)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _embedded(command: str, label: str, port: int, variable: str, env: dict[str, str]) -> Child:
    """An embedded server child on ``port``, or a clear error when something already listens there."""
    if not _port_is_free(port):
        raise ConfigError(
            f"port {port} is taken, so the embedded {label} cannot start there: set {variable} "
            f"to use that server, or pass --{command}-port"
        )
    return Child(command, msgstatus_argv(command, "--port", str(port)), env, port=port)


def run_all(
    settings: Settings, workers: int, simple: bool, mongo_port: int, redis_port: int, api_port: int
) -> None:
    """Start embedded servers (if nothing is configured), the watcher, workers and the scheduler."""
    env = dict(os.environ)
    children: list[Child] = []
    if settings.embedded_mongo and (missing := mongo_missing()):
        raise ConfigError(f"MONGO_DB_URL is not set, and {missing}; or set MONGO_DB_URL")
    if settings.embedded_redis:
        try:
            redis_server_binary()
        except RedisServerNotFound as error:
            raise ConfigError(f"REDIS_URL is not set, and {error}; or set REDIS_URL") from None
    if settings.embedded_mongo:
        children.append(_embedded("mongo", "MongoDB", mongo_port, "MONGO_DB_URL", env))
        env["MONGO_DB_URL"] = f"mongodb://127.0.0.1:{mongo_port}/{settings.database}?replicaSet={REPLICA_SET}"
        env["APP_SECRET"] = settings.app_secret  # children see a configured URL; keep the embedded secret
    if settings.embedded_redis:
        children.append(_embedded("redis", "Redis", redis_port, "REDIS_URL", env))
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    if settings.sweep_only:
        env["SWEEP_ONLY"] = "1"
        log.info("sweep-only mode: no watcher; the sweep runs every %ds", settings.sweep_interval)
    else:
        children.append(Child("watcher", msgstatus_argv("watch"), env))
    extra = ["--simple" if simple else "--fork"]
    children += [Child(f"worker-{i + 1}", msgstatus_argv("work", *extra), env) for i in range(workers)]
    children.append(Child("scheduler", msgstatus_argv("schedule"), env))
    if api_port:
        children.append(Child("api", msgstatus_argv("api", "--port", str(api_port)), env))
    # One line per child start and exit, whatever LOG_LEVEL says for the rest.
    logging.getLogger("msgstatus.supervisor").setLevel(logging.INFO)
    Supervisor(children).run()
