"""Counters and one latency histogram shared by all msgstatus processes, kept in Redis.

Each process adds to them; ``msgstatus status`` and the metrics endpoint read them.
A counter update never fails the work it counts.
"""

from __future__ import annotations

import contextlib

import redis

KEY = "msgstatus:counters"
LATENCY_KEY = "msgstatus:latency"

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the insert-to-emit histogram's buckets."""


def incr(connection: redis.Redis, name: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name``."""
    with contextlib.suppress(redis.RedisError):
        connection.hincrby(KEY, name, amount)


def observe_latency(connection: redis.Redis, seconds: float) -> None:
    """Count one communication-insert-to-emit latency into the histogram."""
    bucket = next((f"{b:g}" for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    with contextlib.suppress(redis.RedisError), connection.pipeline(transaction=False) as pipe:
        pipe.hincrby(LATENCY_KEY, bucket, 1)
        pipe.hincrbyfloat(LATENCY_KEY, "sum", seconds)
        pipe.hincrby(LATENCY_KEY, "count", 1)
        pipe.execute()


def read(connection: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in connection.hgetall(KEY).items()}  # type: ignore[union-attr]


def read_latency(connection: redis.Redis) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in connection.hgetall(LATENCY_KEY).items()}  # type: ignore[union-attr]
