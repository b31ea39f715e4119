"""The messages whose logs the watcher has just seen.

A message's insert event enqueues its job only if its log came first (the usual
message has none yet, and its log's own event brings it). Remembering the logs
the communications stream delivered answers that without asking the database.
The memory answers alone only once that stream has run for TRUST_AFTER seconds:
before, a log may have come before the stream opened, and the database is asked.
A log the memory missed all the same delays its message to the next sweep.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

LOG_MEMORY = 300.0
"""Seconds a seen log is remembered (a log comes before its message by milliseconds, if at all)."""

TRUST_AFTER = 5.0
"""Seconds the communications stream must have been open before the memory alone answers."""


class RecentLogs:
    """Message ids whose log the communications stream delivered in the last LOG_MEMORY seconds."""

    def __init__(self, window: float = LOG_MEMORY, clock: Callable[[], float] = time.monotonic) -> None:
        self._window, self._clock = window, clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._open_since: float | None = None
        self._lock = threading.Lock()

    def opened(self) -> None:
        """The communications stream is open: from now on it sees every log."""
        with self._lock:
            self._open_since = self._clock()

    def closed(self) -> None:
        """The communications stream closed: logs may come unseen until it has been open again a while."""
        with self._lock:
            self._open_since = None

    def saw(self, message_ids: Iterable[str]) -> None:
        """The logs of these messages were just delivered."""
        now = self._clock()
        with self._lock:
            for mid in message_ids:
                self._seen[mid] = now
                self._seen.move_to_end(mid)
            while self._seen and next(iter(self._seen.values())) < now - self._window:
                self._seen.popitem(last=False)

    def trusted(self) -> bool:
        """Whether a message the memory does not know surely has no log yet (or one the sweep finds)."""
        with self._lock:
            return self._open_since is not None and self._clock() - self._open_since >= TRUST_AFTER

    def split(self, message_ids: list[str]) -> tuple[list[str], list[str]]:
        """Those of ``message_ids`` whose log was seen, and the others."""
        with self._lock:
            return [m for m in message_ids if m in self._seen], [m for m in message_ids if m not in self._seen]
