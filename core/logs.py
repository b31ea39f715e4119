"""Logging set-up shared by every msgstatus process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from core.settings import redact


class RedactingFormatter(logging.Formatter):
    """Any formatter's line with URL passwords masked (drivers put URLs in their errors)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for machines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "INFO", fmt: str = "text", process: str = "msgstatus") -> None:
    """Send logs to stderr, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(
        f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s"
    )
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
