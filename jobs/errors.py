"""Errors of the status job, by where their cause lies and so what must happen next."""

from __future__ import annotations


def describe(error: BaseException) -> str:
    """An error as operators read it: its type and message."""
    return f"{type(error).__name__}: {error}"


class RetryableError(Exception):
    """Outside the message, and worth another attempt: the socket service is down, slow or refusing us."""


class SocketUnavailable(RetryableError):
    """The socket service did not take the emit: refused, timed out, 5xx, or a 4xx about us, not the message.

    ``retry_after``: the seconds its Retry-After asked for (with a 429 or 503), the least wait before the next try.
    """

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Shed(RetryableError):
    """Not sent: the socket service is failing and the retry budget is spent (``jobs.budget``); the attempt
    counts as failed, and the message goes on along its schedule."""


class BadMessage(Exception):
    """The message or its communication log lacks what the emit needs: never retried, parked for an operator."""


class EmitRejected(BadMessage):
    """The socket service refused the message itself (400, 413, 422...): retrying the same data cannot help."""


class NotConfigured(Exception):
    """The job runs in a process that msgstatus did not set up (e.g. a bare `rq worker`): run again later."""
