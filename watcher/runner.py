"""``msgstatus watch``: change streams that enqueue status jobs the moment a message or its log arrives."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pymongo
import redis
from pymongo.errors import OperationFailure, PyMongoError
from rq import Queue
from rq.exceptions import DuplicateJobError

from core import metrics
from core.defaults import SWEEP_QUEUE
from core.settings import Settings
from jobs.queueing import BATCH_SIZE, Enqueuer, status_queue
from jobs.sweep import run_sweep
from watcher import roles
from watcher.backoff import Backoff
from watcher.events import LINGER, Events
from watcher.lock import LeaderLock
from watcher.recent import RecentLogs
from watcher.stream import STREAMS, StreamSpec, has_no_change_streams, is_history_lost
from watcher.tokens import TokenStore

log = logging.getLogger(__name__)

AWAIT_MS = 1000
"""How long one getMore waits for events; also how soon a stream notices it should stop."""

LOCK_TTL = 5.0
"""Seconds the leader lock lives without renewal: a standby takes over within about this."""

LEAD_MARGIN = 1.5
"""Seconds before the lock may have expired at which a leader that could not renew stops its streams:
at least one getMore (AWAIT_MS), so they are closed before a standby can take the lock."""

REDIS_TIMEOUT = 2.0
"""Longest wait for one Redis command: a renewal must fail, not hang, when Redis is unreachable."""

STATE_TTL = 3 * LOCK_TTL
"""Seconds the watcher's state in Redis outlives the last leader that refreshed it."""

RENEW_EVERY = 1.0
"""Seconds between renewals of the leader lock (and standby attempts to take it)."""

TOKEN_REFRESH = 10.0
"""Seconds after which an unchanged token is saved again, keeping its age a liveness signal."""

RECHECK_SWEEP_ONLY = 300.0
"""Seconds between checks whether a sweep-only deployment has gained change streams."""

STATE_KEY = "msgstatus:watcher:state"

CATCH_UP_JOB_ID = "msgstatus-catch-up-sweep"


class Watcher:
    """Leader election, one thread per change stream, a stop flag set by SIGTERM/SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=5000
        )
        self.db = self.client[settings.database]
        self.tokens = TokenStore(self.redis)
        self.lock = LeaderLock(self.redis, LOCK_TTL)
        self.enqueuer = Enqueuer(status_queue(self.redis))
        self.recent_logs = RecentLogs()
        self.events = Events(self.redis, self.db, self.enqueuer, self.recent_logs)
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.threads: list[threading.Thread] = []
        self.term = 0
        self.lead_until = 0.0
        self.sweep_only = False  # the server answered that it has no change streams

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
            asked = time.monotonic()
            try:
                leader = self.lock.hold()
                backoff.reset()
            except redis.RedisError as error:
                leader = False
                delay = backoff.next()
                log.warning("watcher: Redis unavailable (%s); retrying in %.1fs", error, delay)
                self._lose_lead()
                self.stopping.wait(delay)
            if leader:
                # Streams run only while the lock is surely still ours, even if the next renewal hangs.
                self.lead_until = asked + LOCK_TTL - LEAD_MARGIN
                self._refresh_state()
            if leader and not (self.leading.is_set() and all(t.is_alive() for t in self.threads)):
                # Also when this term's streams ended on their own: a renewal that came too late to
                # extend their lease closes them while the lock stays ours.
                self._begin_term()
            elif not leader and self.leading.is_set():
                self._lose_lead()
            roles.announce(self.redis, self.lock.owner, self._role())
            self.stopping.wait(RENEW_EVERY)

    def _role(self) -> roles.Role:
        if not self.leading.is_set():
            return "standby"
        return "sweep_only" if self.sweep_only else "active"

    def _begin_term(self) -> None:
        """Start this term's streams, once the previous term's have ended."""
        self.term += 1  # first: a previous term's stream still running sees its term is over
        for thread in self.threads:
            thread.join(AWAIT_MS / 1000 + 1)
        log.info("watcher %s is active (term %d)", self.lock.owner[:8], self.term)
        self._set_state("active")
        self.leading.set()
        self.threads = [self._start(spec, self.term) for spec in STREAMS]

    def _lose_lead(self) -> None:
        if self.leading.is_set():
            log.warning("watcher %s lost the lock; back to standby", self.lock.owner[:8])
            self.leading.clear()

    def _start(self, spec: StreamSpec, term: int) -> threading.Thread:
        thread = threading.Thread(target=self._follow, args=(spec, term), name=f"stream-{spec.name}", daemon=True)
        thread.start()
        return thread

    def _running(self, term: int) -> bool:
        """Whether a stream of ``term`` may go on: that term is current, the lock surely ours, no stop asked."""
        return (
            self.leading.is_set() and self.term == term and not self.stopping.is_set()
            and time.monotonic() < self.lead_until
        )

    def _pause(self, seconds: float, term: int) -> None:
        """Wait ``seconds``, or less if the term ends meanwhile."""
        deadline = time.monotonic() + seconds
        while self._running(term) and (left := deadline - time.monotonic()) > 0:
            self.stopping.wait(min(left, 0.2))

    def _release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.lock.release()
        roles.withdraw(self.redis, self.lock.owner)

    def _set_state(self, mode: str) -> None:
        with contextlib.suppress(redis.RedisError), self.redis.pipeline() as pipe:
            pipe.hset(STATE_KEY, mapping={"mode": mode, "owner": self.lock.owner, "since": time.time()})
            pipe.expire(STATE_KEY, int(STATE_TTL))
            pipe.execute()

    def _refresh_state(self) -> None:
        """The state describes a live leader: it expires unless that leader keeps refreshing it."""
        with contextlib.suppress(redis.RedisError):
            self.redis.expire(STATE_KEY, int(STATE_TTL))

    # -- one stream ------------------------------------------------------------

    def _follow(self, spec: StreamSpec, term: int) -> None:
        backoff = Backoff()
        after: Any = None
        while self._running(term):
            try:
                try:
                    after = self._tail(spec, backoff, term, after)
                except OperationFailure as error:
                    if is_history_lost(error):
                        self._recover_history_lost(spec, error)
                    elif has_no_change_streams(error):
                        self._sweep_only(spec, error, term)
                    else:
                        raise
            except (PyMongoError, redis.RedisError) as error:
                self._wait_to_reconnect(spec, error, backoff, term)
            except Exception as error:  # a bug must not silently end the stream
                log.exception("stream %s: unexpected error", spec.name)
                self._wait_to_reconnect(spec, error, backoff, term)
        log.info("stream %s closed (term %d)", spec.name, term)

    def _tail(self, spec: StreamSpec, backoff: Backoff, term: int, after: Any = None) -> Any:
        """Follow the stream from the stored token (or ``after``, an invalidate's); the invalidate's token
        if the stream ended (its collection was dropped or renamed), else None once the term ends."""
        token = self.tokens.load(spec.name)
        if token is None and after is None:
            self._catch_up(spec, "no stored resume token")
        options: dict[str, Any] = {"max_await_time_ms": AWAIT_MS}
        if spec.full_document:
            options["full_document"] = spec.full_document
        if after is not None:
            options["start_after"] = after  # resuming after an invalidate is refused: starting after it is not
        elif token is not None:
            options["resume_after"] = token
        with self.db[spec.collection].watch(spec.pipeline, **options) as stream, self._remembering(spec):
            log.info("stream %s open (%s)", spec.name,
                     "after its collection was dropped" if after else "resumed" if token else "from now")
            self.sweep_only = False
            saved, saved_at = token, time.monotonic()
            while self._running(term):
                change = stream.try_next()
                backoff.reset()
                if change is not None:
                    changes = [change]
                    # What the last getMore brought is already here: taken together, enqueued in batches.
                    while len(changes) < BATCH_SIZE and _buffered(stream) and (more := stream.try_next()):
                        changes.append(more)
                    self.events.handle(spec, [c for c in changes if c.get("operationType") != "invalidate"])
                    if self.events.backlogged():
                        self._pause(LINGER, term)
                if not stream.alive:  # invalidated: the collection was dropped or renamed; it may come back
                    log.warning("stream %s: invalidated (its collection was dropped or renamed); starting "
                                "again after the invalidate", spec.name)
                    return stream.resume_token
                token = stream.resume_token
                stale = time.monotonic() - saved_at > TOKEN_REFRESH
                if token is not None and (token != saved or stale):
                    # Saved only after the events it covers were enqueued: a kill -9
                    # between the two replays them, and the job ids keep that harmless.
                    # Re-saved when unchanged too, so its age shows the stream is alive.
                    saved, saved_at = token, time.monotonic()
                    self.tokens.save(spec.name, token, time.time() if change is not None else None)

    @contextlib.contextmanager
    def _remembering(self, spec: StreamSpec) -> Iterator[None]:
        """While a stream of logs is open, the memory of seen logs grows trustworthy."""
        if not spec.names_logs:
            yield
            return
        self.recent_logs.opened()
        try:
            yield
        finally:
            self.recent_logs.closed()

    def _recover_history_lost(self, spec: StreamSpec, error: OperationFailure) -> None:
        metrics.HISTORY_LOST.inc(self.redis)
        log.warning(
            "stream %s: the server cannot resume from the stored token (%s); starting from now "
            "and running a catch-up sweep", spec.name, error,
        )
        self.tokens.forget(spec.name)

    def _catch_up(self, spec: StreamSpec, reason: str) -> None:
        """One sweep at once, for what happened while nobody watched."""
        metrics.CATCH_UPS.inc(self.redis)
        log.warning("stream %s: %s; enqueuing a catch-up sweep", spec.name, reason)
        with contextlib.suppress(DuplicateJobError):  # one waiting catch-up sweep serves both streams
            Queue(SWEEP_QUEUE, connection=self.redis).enqueue(
                run_sweep, True, job_id=CATCH_UP_JOB_ID, unique=True, result_ttl=0,
                description="catch-up sweep (messages of any age)"
            )

    def _sweep_only(self, spec: StreamSpec, error: OperationFailure, term: int) -> None:
        metrics.NO_CHANGE_STREAMS.inc(self.redis)
        self.sweep_only = True
        self._set_state("sweep-only")
        log.error(
            "stream %s: this MongoDB offers no change streams (%s). Running sweep-only: messages are "
            "found by the %ds sweep. Use a replica set (and the changeStream privilege) for events; "
            "checking again in %.0fs", spec.name, error, self.settings.sweep_interval, RECHECK_SWEEP_ONLY,
        )
        self._pause(RECHECK_SWEEP_ONLY, term)

    def _wait_to_reconnect(self, spec: StreamSpec, error: Exception, backoff: Backoff, term: int) -> None:
        delay = backoff.next()
        metrics.RECONNECTS.inc(self.redis)
        log.warning("stream %s: %s: %s; reconnecting in %.1fs", spec.name, type(error).__name__, error, delay)
        self._pause(delay, term)


def _buffered(stream: Any) -> bool:
    """Whether the stream holds events already received (pymongo's cursor buffer; False if unknown)."""
    return bool(getattr(getattr(stream, "_cursor", None), "_data", None))


def run_watcher(settings: Settings) -> None:
    """Run the watcher until SIGTERM/SIGINT."""
    Watcher(settings).run()
