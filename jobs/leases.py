"""Liveness of claims: a Redis key per claim token that lives only while the job holding the claim runs.

A claim in MongoDB says which job works on a message; its key in Redis says that
the job is still alive. The job sets the key before it claims and deletes it when
it ends, however it ends; a daemon thread renews every live key, so a killed
worker's keys expire within the heartbeat TTL and the next sweep takes its
messages over. A slow emit keeps its key, and so its message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable

import redis

from core.defaults import HEARTBEAT_EVERY

log = logging.getLogger(__name__)

PREFIX = "msgstatus:claim:"


def key(token: str) -> str:
    return f"{PREFIX}{token}"


def alive(connection: redis.Redis, tokens: Iterable[str]) -> dict[str, bool]:
    """Whether the job holding each claim token still runs (one round trip)."""
    tokens = list(tokens)
    if not tokens:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for token in tokens:
            pipe.exists(key(token))
        return {token: bool(found) for token, found in zip(tokens, pipe.execute(), strict=True)}


class LeaseKeeper:
    """This process's live claim tokens, renewed every HEARTBEAT_EVERY seconds by a daemon thread."""

    def __init__(self, connection: redis.Redis, ttl: float) -> None:
        self.redis = connection
        self.ttl_ms = int(ttl * 1000)
        self.pid = os.getpid()
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="msgstatus-leases", daemon=True)
        self._thread.start()

    def hold(self, token: str) -> None:
        """Mark ``token`` alive before it is written as a claim (raises if Redis is away)."""
        self.redis.set(key(token), self.pid, px=self.ttl_ms)
        with self._lock:
            self._tokens.add(token)

    def drop(self, token: str) -> None:
        """The job holding ``token`` ended: its claim, if still written, is free for the next sweep."""
        with self._lock:
            self._tokens.discard(token)
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(key(token))

    def close(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            with self._lock:
                tokens = list(self._tokens)
            if not tokens:
                continue
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for token in tokens:
                        pipe.set(key(token), self.pid, px=self.ttl_ms)
                    pipe.execute()
            except redis.RedisError as error:
                log.warning("could not renew %d claim heartbeats: %s", len(tokens), error)
