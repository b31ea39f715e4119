"""``msgstatus watch``: change streams that enqueue status jobs the moment a message or its log arrives."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from types import FrameType
from typing import Any

import pymongo
import redis
from pymongo.errors import OperationFailure, PyMongoError
from rq import Queue
from rq.exceptions import DuplicateJobError

from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import run_sweep
from msgstatus import counters
from msgstatus.defaults import SWEEP_QUEUE
from msgstatus.settings import Settings
from watcher.lock import LeaderLock
from watcher.stream import STREAMS, BadEvent, StreamSpec, has_no_change_streams, is_history_lost
from watcher.tokens import TokenStore

log = logging.getLogger(__name__)

AWAIT_MS = 1000
"""How long one getMore waits for events; also how soon a stream notices it should stop."""

LOCK_TTL = 5.0
"""Seconds the leader lock lives without renewal: a standby takes over within about this."""

RENEW_EVERY = 1.0
"""Seconds between renewals of the leader lock (and standby attempts to take it)."""

BACKOFF_MAX = 30.0
"""Longest wait between reconnection attempts."""

TOKEN_REFRESH = 10.0
"""Seconds after which an unchanged token is saved again, keeping its age a liveness signal."""

RECHECK_SWEEP_ONLY = 300.0
"""Seconds between checks whether a sweep-only deployment has gained change streams."""

STATE_KEY = "msgstatus:watcher:state"

CATCH_UP_JOB_ID = "msgstatus-catch-up-sweep"


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.5, cap: float = BACKOFF_MAX) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class Watcher:
    """Leader election, one thread per change stream, a stop flag set by SIGTERM/SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=5000
        )
        self.db = self.client[settings.database]
        self.tokens = TokenStore(self.redis)
        self.lock = LeaderLock(self.redis, LOCK_TTL)
        self.enqueuer = Enqueuer(status_queue(self.redis))
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.threads: list[threading.Thread] = []

    # -- process ---------------------------------------------------------------

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.info("watcher %s starting (standby until it holds the lock)", self.lock.owner[:8])
        try:
            self._loop()
        finally:
            self.leading.clear()
            for thread in self.threads:
                thread.join(AWAIT_MS / 1000 + 5)
            self._release()
            self.client.close()
            self.redis.close()
            log.info("watcher stopped")

    def _loop(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                leader = self.lock.hold()
                backoff.reset()
            except redis.RedisError as error:
                leader = False
                delay = backoff.next()
                log.warning("watcher: Redis unavailable (%s); retrying in %.1fs", error, delay)
                self.stopping.wait(delay)
            if leader and not self.leading.is_set():
                for thread in self.threads:  # streams of an earlier term end first
                    thread.join()
                log.info("watcher %s is active", self.lock.owner[:8])
                self._set_state("active")
                self.leading.set()
                self.threads = [self._start(spec) for spec in STREAMS]
            elif not leader and self.leading.is_set():
                log.warning("watcher %s lost the lock; back to standby", self.lock.owner[:8])
                self.leading.clear()
            self.stopping.wait(RENEW_EVERY)

    def _start(self, spec: StreamSpec) -> threading.Thread:
        thread = threading.Thread(target=self._follow, args=(spec,), name=f"stream-{spec.name}", daemon=True)
        thread.start()
        return thread

    def _running(self) -> bool:
        return self.leading.is_set() and not self.stopping.is_set()

    def _release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.lock.release()

    def _set_state(self, mode: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self.redis.hset(STATE_KEY, mapping={"mode": mode, "owner": self.lock.owner, "since": time.time()})

    # -- one stream ------------------------------------------------------------

    def _follow(self, spec: StreamSpec) -> None:
        backoff = Backoff()
        while self._running():
            try:
                try:
                    self._tail(spec, backoff)
                except OperationFailure as error:
                    if is_history_lost(error):
                        self._recover_history_lost(spec, error)
                    elif has_no_change_streams(error):
                        self._sweep_only(spec, error)
                    else:
                        raise
            except (PyMongoError, redis.RedisError) as error:
                self._wait_to_reconnect(spec, error, backoff)
            except Exception as error:  # a bug must not silently end the stream
                log.exception("stream %s: unexpected error", spec.name)
                self._wait_to_reconnect(spec, error, backoff)
        log.info("stream %s closed", spec.name)

    def _tail(self, spec: StreamSpec, backoff: Backoff) -> None:
        token = self.tokens.load(spec.name)
        if token is None:
            self._catch_up(spec, "no stored resume token")
        options: dict[str, Any] = {"max_await_time_ms": AWAIT_MS}
        if token is not None:
            options["resume_after"] = token
        with self.db[spec.collection].watch(spec.pipeline, **options) as stream:
            log.info("stream %s open (%s)", spec.name, "resumed" if token else "from now")
            saved, saved_at = token, time.monotonic()
            while self._running():
                change = stream.try_next()
                backoff.reset()
                if change is not None:
                    self._handle(spec, change)
                token = stream.resume_token
                stale = time.monotonic() - saved_at > TOKEN_REFRESH
                if token is not None and (token != saved or stale):
                    # Saved only after the events it covers were enqueued: a kill -9
                    # between the two replays them, and the job ids keep that harmless.
                    # Re-saved when unchanged too, so its age shows the stream is alive.
                    saved, saved_at = token, time.monotonic()
                    self.tokens.save(spec.name, token, time.time() if change is not None else None)

    def _handle(self, spec: StreamSpec, change: dict[str, Any]) -> None:
        counters.incr(self.redis, f"change_events_{spec.name}")
        try:
            message_id = spec.message_id(change)
        except (BadEvent, KeyError, TypeError) as error:
            counters.incr(self.redis, "bad_events")
            log.warning("stream %s: skipped an event: %s", spec.name, error)
            return
        outcome = self.enqueuer.enqueue(message_id)
        log.debug("stream %s: message %s %s", spec.name, message_id, outcome)

    def _recover_history_lost(self, spec: StreamSpec, error: OperationFailure) -> None:
        counters.incr(self.redis, "history_lost_recoveries")
        log.warning(
            "stream %s: the server cannot resume from the stored token (%s); starting from now "
            "and running a catch-up sweep", spec.name, error,
        )
        self.tokens.forget(spec.name)

    def _catch_up(self, spec: StreamSpec, reason: str) -> None:
        """One sweep at once, for what happened while nobody watched."""
        counters.incr(self.redis, "catch_up_sweeps")
        log.warning("stream %s: %s; enqueuing a catch-up sweep", spec.name, reason)
        with contextlib.suppress(DuplicateJobError):  # one waiting catch-up sweep serves both streams
            Queue(SWEEP_QUEUE, connection=self.redis).enqueue(
                run_sweep, job_id=CATCH_UP_JOB_ID, unique=True, result_ttl=0, description="catch-up sweep"
            )

    def _sweep_only(self, spec: StreamSpec, error: OperationFailure) -> None:
        counters.incr(self.redis, "no_change_streams")
        self._set_state("sweep-only")
        log.error(
            "stream %s: this MongoDB offers no change streams (%s). Running sweep-only: messages are "
            "found by the %ds sweep. Use a replica set (and the changeStream privilege) for events; "
            "checking again in %.0fs", spec.name, error, self.settings.sweep_interval, RECHECK_SWEEP_ONLY,
        )
        self.stopping.wait(RECHECK_SWEEP_ONLY)

    def _wait_to_reconnect(self, spec: StreamSpec, error: Exception, backoff: Backoff) -> None:
        delay = backoff.next()
        counters.incr(self.redis, "stream_reconnects")
        log.warning("stream %s: %s: %s; reconnecting in %.1fs", spec.name, type(error).__name__, error, delay)
        self.stopping.wait(delay)


def run_watcher(settings: Settings) -> None:
    """Run the watcher until SIGTERM/SIGINT."""
    Watcher(settings).run()
