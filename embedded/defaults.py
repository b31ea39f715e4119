"""Defaults of the embedded servers."""

HISTORY_SIZE = 50_000
"""Change events the embedded MongoDB keeps for resuming; an older token gets ChangeStreamHistoryLost."""

MONGO_PORT = 27017
"""Port of the embedded MongoDB when none is given."""

REDIS_PORT = 6379
"""Port of the embedded Redis when none is given."""
