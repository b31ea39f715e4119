"""Errors of the status job, by what must happen next."""

from __future__ import annotations


class RetryableError(Exception):
    """Worth another attempt later: the socket service is down or slow, a transaction conflicted."""


class SocketUnavailable(RetryableError):
    """The socket service did not take the emit: refused, timed out, 5xx, 408 or 429."""


class PermanentError(Exception):
    """Never retried: retrying cannot help (a 4xx from the socket service, a malformed message)."""


class EmitRejected(PermanentError):
    """The socket service refused the emit with a 4xx other than 408/429."""


class BadMessage(PermanentError):
    """The message or its communication log lacks what the emit needs."""


class NotConfigured(PermanentError):
    """The job runs in a process that msgstatus did not set up (e.g. a bare `rq worker`)."""
