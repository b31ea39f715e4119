"""Default values, one place, each with the reason it is what it is."""

SWEEP_INTERVAL = 5
"""Seconds between sweeps: the seed's documented 5-second cron (rq-scheduler counts whole seconds)."""

CLAIM_TTL = 60.0
"""Seconds a worker's claim on a message lasts; a crashed worker's message waits this long. It must
outlast one attempt (lookups, an emit of up to EMIT_TIMEOUT, the commit)."""

MAX_ATTEMPTS = 10
"""Attempts of one status job before it fails, as the seed's Bull job had."""

MAX_BACKOFF = 300.0
"""Longest wait between two attempts, in seconds."""

SWEEP_BATCH = 500
"""Messages one sweep enqueues at most; the next sweep takes the rest."""

EMIT_TIMEOUT = 10.0
"""Seconds an emit to the socket service may take before it counts as failed."""

JWT_TTL = 120
"""Lifetime of the emit's JWT in seconds (the seed's expiresIn: '2m')."""

QUEUE = "support_message_status"
"""The RQ queue of status jobs (the seed's queue was support_message_status_queue)."""

SWEEP_QUEUE = "support_message_status_sweep"
"""The RQ queue of sweep jobs; workers take from it first, so a backlog never delays a sweep."""

DATABASE = "msgstatus"
"""Database used when MONGO_DB_URL names none."""

MIN_SECRET_BYTES = 32
"""Shortest APP_SECRET accepted outside the embedded default (HS256 wants 256 bits)."""

EMBEDDED_APP_SECRET = "msgstatus-embedded-default-secret-not-for-production"
"""APP_SECRET of the embedded default when none is set: fine for a demo, refused elsewhere."""

EMBEDDED_MONGO_URL = "mongodb://127.0.0.1:27017/msgstatus?directConnection=true"
"""Where the embedded MongoDB listens by default."""

EMBEDDED_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where the embedded Redis listens by default."""
