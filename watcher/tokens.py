"""Resume tokens in Redis: the whole token of each stream, saved after what it covers was enqueued."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import bson
import redis

PREFIX = "msgstatus:watcher"


class TokenStore:
    """One Redis hash per stream: its token (BSON, the whole document) and when it was saved."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    @staticmethod
    def key(stream: str) -> str:
        return f"{PREFIX}:stream:{stream}"

    def load(self, stream: str) -> Mapping[str, Any] | None:
        raw = self.redis.hget(self.key(stream), "token")
        return bson.decode(raw) if raw else None  # type: ignore[arg-type]

    def save(self, stream: str, token: Mapping[str, Any], event_time: float | None = None) -> None:
        fields: dict[str, bytes | float] = {"token": bson.encode(token), "saved": time.time()}
        if event_time is not None:
            fields["last_event"] = event_time
        self.redis.hset(self.key(stream), mapping=fields)  # type: ignore[arg-type]

    def forget(self, stream: str) -> None:
        self.redis.hdel(self.key(stream), "token")

    def info(self, stream: str) -> dict[str, float]:
        """When the token was last saved and when the last event came (epoch seconds)."""
        raw = self.redis.hmget(self.key(stream), "saved", "last_event")
        return {name: float(value) for name, value in zip(("saved", "last_event"), raw, strict=True) if value}  # type: ignore[arg-type]
