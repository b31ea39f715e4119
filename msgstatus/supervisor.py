"""Runs child processes, restarts one that dies (with backoff), stops them all on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from embedded.processes import wait_for_port

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
"""Longest wait before restarting a child that keeps dying."""

STABLE_AFTER = 60.0
"""A child that ran this long has its restart backoff reset."""

STOP_TIMEOUT = 15.0
"""Seconds children get to stop after SIGTERM before SIGKILL."""


@dataclass
class Child:
    """One supervised process: its name, its command line, and its restart state."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    port: int | None = None
    """A server's port: later children start once it listens, and it stops after them."""
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(list(self.argv), env=self.env)
        self.started = time.monotonic()
        self.pids.append(self.process.pid)
        log.info("started %s (pid %d)", self.name, self.process.pid)
        if self.port is not None:
            wait_for_port("127.0.0.1", self.port, 30, self.process)


class Supervisor:
    """A small run loop over children; ``stop()`` (or a signal) ends it."""

    def __init__(self, children: Sequence[Child], poll: float = 0.2) -> None:
        self.children = list(children)
        self.poll = poll
        self._stopping = False

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            for child in self.children:
                child.start()
            while not self._stopping:
                self._tend(time.monotonic())
                time.sleep(self.poll)
        finally:
            self._stop_all()

    def _tend(self, now: float) -> None:
        for child in self.children:
            if child.process is None:
                if now >= child.restart_at:
                    child.start()
                continue
            code = child.process.poll()
            if code is None:
                continue
            ran = now - child.started
            child.failures = 0 if ran >= STABLE_AFTER else child.failures + 1
            delay = min(RESTART_BACKOFF_MAX, 0.5 * 2 ** max(child.failures - 1, 0)) if child.failures else 0.0
            log.warning("%s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                        child.name, child.process.pid, code, ran, delay)
            child.process, child.restart_at = None, now + delay

    def _stop_all(self) -> None:
        # Clients first, then the servers they use.
        self._stop([c for c in self.children if c.port is None])
        self._stop([c for c in self.children if c.port is not None])

    def _stop(self, children: list[Child]) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            log.info("%s (pid %d) exited with %s", child.name, child.process.pid, child.process.returncode)
