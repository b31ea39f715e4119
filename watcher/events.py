"""What a batch of change events leads to: the message each names, and its status job enqueued (a new
message's only if its log came first)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from bson import ObjectId
from pymongo.database import Database

from core import metrics
from jobs import communications, seenlogs
from jobs.queueing import Enqueuer
from watcher.recent import RecentLogs
from watcher.stream import BadEvent, StreamSpec

log = logging.getLogger(__name__)

LINGER = 0.05
"""Seconds a stream waits before its next getMore while status jobs queue up: the events that arrive
meanwhile come in one getMore and wait in one batch job instead of a job each (they would have waited
behind the queue all the same)."""

BACKLOG = 2
"""Status jobs waiting in the queue from which the streams linger."""


class Events:
    """Turns the events one getMore brought into enqueued status jobs."""

    def __init__(self, connection: redis.Redis, db: Database, enqueuer: Enqueuer,  # type: ignore[type-arg]
                 recent_logs: RecentLogs) -> None:
        self.redis, self.db, self.enqueuer, self.recent_logs = connection, db, enqueuer, recent_logs

    def handle(self, spec: StreamSpec, changes: list[dict[str, Any]]) -> None:
        """Count the events, skip (and count) those that name no message, enqueue the rest's jobs."""
        metrics.CHANGE_EVENTS.inc(self.redis, len(changes), stream=spec.name)
        ids, seen = [], []
        for change in changes:
            mid: str | None = None
            try:
                mid = spec.message_id(change)
                ids.append(mid)
            except (BadEvent, KeyError, TypeError) as error:
                metrics.BAD_EVENTS.inc(self.redis)
                log.warning("stream %s: skipped an event: %s", spec.name, error)
            if spec.names_logs and isinstance(found := change.get("fullDocument"), dict) and "_id" in found:
                seen.append((mid, found))
        if spec.names_logs:
            self.recent_logs.saw(ids)
            seenlogs.remember(self.redis, seen)  # before the jobs it serves are enqueued
        if spec.only_with_log and ids:
            ids = self._with_log(ids)
        outcomes = self.enqueuer.enqueue_many(ids)
        log.debug("stream %s: %d events: %s", spec.name, len(changes), dict(outcomes))

    def backlogged(self) -> bool:
        """Whether status jobs queue up (the workers are busy): then the stream lingers (LINGER)."""
        return self.enqueuer.queue.count >= BACKLOG

    def _with_log(self, ids: list[str]) -> list[str]:
        """Those messages whose log is there: seen by the other stream, else (until its memory can be
        trusted) found in the database. The others' logs bring them."""
        seen, unseen = self.recent_logs.split(ids)
        valid = [ObjectId(mid) for mid in unseen if ObjectId.is_valid(mid)]
        found: set[str] = set()
        if not self.recent_logs.trusted():
            found = {str(o) for o in communications.with_communication(self.db, valid)}
        metrics.BEFORE_LOG.inc(self.redis, len(valid) - len(found))
        return [*seen, *(mid for mid in unseen if mid in found or not ObjectId.is_valid(mid))]  # a job names a bad id
