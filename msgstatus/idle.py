"""A process that has nothing to do stays up, idle, until SIGTERM/SIGINT.

A supervisor that restarts what exits (compose's ``restart: unless-stopped``, systemd's
``Restart=always``) would otherwise start a switched-off process again and again.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

DISABLED = "disabled by QM_CONVERSATIONS / QM_SUPPORT_MESSAGE_STATUS (both must be true to track messages)"
"""Why every process of a switched-off service is idle, as its log and ``msgstatus status`` say."""


def idle(process: str, reason: str) -> None:
    """Log why ``process`` does nothing, then wait for SIGTERM/SIGINT and return."""
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s stopping (%s)", process, signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.warning("%s is idle: %s; it stays up and does nothing until stopped", process, reason)
    while not stopping.wait(3600):
        log.info("%s still idle: %s", process, reason)
