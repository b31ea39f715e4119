"""Per-process resources of the jobs: settings installed by ``msgstatus work``, clients made lazily.

Jobs are module-level functions taking ids (RQ pickles arguments), so what they
need lives here. A MongoClient must not cross a fork, so each process (each
forked work horse included) opens its own on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pymongo
import redis
from pymongo.database import Database

from core.defaults import EMIT_TIMEOUT
from core.settings import Settings
from jobs.errors import NotConfigured
from jobs.leases import LeaseKeeper

MONGO_TIMEOUT_MS = 10_000
"""Longest wait of a job for the database, unless MONGO_DB_URL sets its own timeouts."""

REDIS_TIMEOUT = 10.0
"""Longest wait of a job for one Redis command."""

_settings: Settings | None = None
_resources: Resources | None = None
_http: httpx.Client | None = None


@dataclass
class Resources:
    """What one process's jobs share: the database and one HTTP client."""

    settings: Settings
    client: pymongo.MongoClient  # type: ignore[type-arg]
    http: httpx.Client
    redis: redis.Redis
    leases: LeaseKeeper
    pid: int

    @property
    def db(self) -> Database:  # type: ignore[type-arg]
        return self.client[self.settings.database]

    def close(self) -> None:
        self.leases.close()
        self.client.close()
        self.redis.close()


def install(settings: Settings) -> None:
    """Give this process (and the work horses it forks) the settings jobs run with."""
    global _settings, _http
    close()
    _settings = settings
    # Built once, before any fork: creating an httpx client (its TLS context)
    # costs ~30 ms, which each forked horse would otherwise pay per job. The
    # parent never sends with it, so no connection is shared across a fork.
    _http = httpx.Client(timeout=httpx.Timeout(EMIT_TIMEOUT, connect=3.0))


def resources() -> Resources:
    """This process's resources, opened on first use after install (and after a fork)."""
    global _resources
    if _settings is None or _http is None:
        raise NotConfigured("msgstatus jobs need settings: run workers with `msgstatus work`")
    if _resources is None or _resources.pid != os.getpid():
        connection = redis.Redis.from_url(_settings.redis_url, socket_timeout=REDIS_TIMEOUT)
        _resources = Resources(
            settings=_settings,
            # Bounded waits: a database that stops answering fails the attempt (and it is
            # retried) instead of holding the worker until RQ's job timeout.
            client=pymongo.MongoClient(_settings.mongo_url, tz_aware=True, connect=False,
                                       **_timeouts(_settings.mongo_url)),  # type: ignore[arg-type]
            http=_http,
            redis=connection,
            leases=LeaseKeeper(connection, _settings.heartbeat_ttl),
            pid=os.getpid(),
        )
    return _resources


def _timeouts(url: str) -> dict[str, int]:
    """MONGO_TIMEOUT_MS for each timeout the URL does not set itself."""
    given = {name.lower() for name in parse_qs(urlsplit(url).query)}
    names = ("serverSelectionTimeoutMS", "socketTimeoutMS")
    return {name: MONGO_TIMEOUT_MS for name in names if name.lower() not in given}


def close() -> None:
    """Close this process's clients, if it opened any."""
    global _resources, _http
    if _resources is not None and _resources.pid == os.getpid():
        _resources.close()
    _resources = None
    if _http is not None:
        _http.close()
        _http = None
