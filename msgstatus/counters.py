"""Counters shared by all msgstatus processes, kept in one Redis hash (read by status and metrics)."""

from __future__ import annotations

import contextlib

import redis

KEY = "msgstatus:counters"


def incr(connection: redis.Redis, name: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name``; never fails the caller over a counter."""
    with contextlib.suppress(redis.RedisError):
        connection.hincrby(KEY, name, amount)


def read(connection: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in connection.hgetall(KEY).items()}  # type: ignore[union-attr]
