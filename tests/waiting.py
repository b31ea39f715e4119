"""Waiting for a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until[T](check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Return ``check()``'s first truthy value; fail naming ``what`` once ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def holds_for(check: Callable[[], object], seconds: float, what: str, interval: float = 0.05) -> None:
    """Fail naming ``what`` as soon as ``check()`` is falsy, within ``seconds`` (for what must stay true)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            raise AssertionError(f"{what} stopped holding")
        time.sleep(interval)


def settled[T](value: Callable[[], T], quiet: float, timeout: float, what: str, interval: float = 0.05) -> T:
    """``value()`` once it has stayed the same for ``quiet`` seconds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        current = value()
        if current != last:
            last, since = current, time.monotonic()
    return last
