"""Riding out a Redis outage: wait, with bounded backoff, until Redis answers or a stop signal comes."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import redis

log = logging.getLogger(__name__)

BACKOFF_MAX = 10.0
"""Longest pause between two PINGs while Redis is away."""


def wait_for_redis(connection: redis.Redis, who: str) -> bool:
    """True once Redis answers PING; False if SIGTERM or SIGINT arrives first (the caller then stops)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    delay = 0.2
    try:
        while not stop.is_set():
            try:
                connection.ping()
                log.info("%s: Redis answers again", who)
                return True
            except redis.exceptions.ConnectionError as error:
                log.warning("%s: Redis unavailable (%s); trying again in %.1fs", who, error, delay)
            stop.wait(delay)
            delay = min(BACKOFF_MAX, delay * 2)
        return False
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
