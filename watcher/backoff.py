"""Capped exponential backoff with full jitter, for reconnecting to Redis and to the database."""

from __future__ import annotations

import random

BACKOFF_MAX = 30.0
"""Longest wait between reconnection attempts."""


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.5, cap: float = BACKOFF_MAX) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0
