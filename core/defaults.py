"""Default values, one place, each with the reason it is what it is."""

SWEEP_INTERVAL = 5
"""Seconds between sweeps: the seed's documented 5-second cron (rq-scheduler counts whole seconds)."""

CLAIM_TTL = 60.0
"""Seconds a worker's claim on a message lasts at most. A claim whose worker stopped beating (HEARTBEAT_TTL)
is taken over long before; this bound serves when a worker is alive but stuck. It must outlast one
attempt (lookups, an emit of up to EMIT_TIMEOUT, the commit)."""

HEARTBEAT_TTL = 5.0
"""Seconds a worker's heartbeat lives in Redis: a claim whose worker has none is taken over by the next sweep."""

HEARTBEAT_EVERY = 1.5
"""Seconds between two heartbeats of a worker process."""

FAST_ATTEMPTS = 10
"""Attempts of a status job on tenacity's 1, 2, 4 ... s schedule before its message waits for slow retries,
as the seed's Bull job had 10."""

SLOW_RETRY = 300
"""Seconds between two slow retries of a message whose fast attempts all failed for an outside cause."""

MAX_BACKOFF = 300.0
"""Longest wait between two attempts, in seconds."""

LOG_HORIZON = 3600
"""Seconds after a message's ``created`` during which sweeps look for its log: the seed's logs arrive 1-5 s
after their message, so an hour is generous. Past it only the log's own insert event (or a catch-up sweep)
finds the message, so that messages whose log never comes cost the sweeps nothing."""

SWEEP_BATCH = 500
"""Messages one sweep enqueues at most; the next sweep takes the rest."""

EMIT_TIMEOUT = 10.0
"""Seconds an emit to the socket service may take before it counts as failed."""

JWT_TTL = 120
"""Lifetime of the emit's JWT in seconds (the seed's expiresIn: '2m')."""

QUEUE = "support_message_status_queue"
"""The RQ queue of status jobs: the seed's Bull queue name, so existing monitors keep their name."""

LEGACY_QUEUES = ("support_message_status",)
"""Queue names of earlier msgstatus versions: workers still drain them, nothing is put on them."""

SWEEP_QUEUE = "support_message_status_sweep"
"""The RQ queue of sweep jobs; workers take from it first, so a backlog never delays a sweep."""

DATABASE = "msgstatus"
"""Database used when MONGO_DB_URL names none."""

MIN_SECRET_BYTES = 32
"""Shortest APP_SECRET taken without a warning (HS256 wants 256 bits); a shorter one works, with a warning at start."""

EMBEDDED_APP_SECRET = "msgstatus-embedded-default-secret-not-for-production"
"""APP_SECRET of the embedded default when none is set: fine for a demo; a configured MongoDB needs APP_SECRET."""

EMBEDDED_REPLICA_SET = "rs0"
"""The one-node replica set the embedded MongoDB is the primary of."""

EMBEDDED_MONGO_URL = f"mongodb://127.0.0.1:27017/msgstatus?replicaSet={EMBEDDED_REPLICA_SET}"
"""Where the embedded MongoDB listens by default."""

EMBEDDED_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where the embedded Redis listens by default."""

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
"""Addresses only this machine reaches: beyond them, the dashboard needs a password and explain over HTTP a token."""
