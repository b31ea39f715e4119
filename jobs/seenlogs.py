"""The communication logs the watcher's stream delivered, kept in Redis for the jobs that decide their messages.

A log that says delivered decides its message delivered whatever other logs the
message has (the seed's choice is "a successful one if any, else the latest").
So a job whose message has such a log among those the watcher saw decides it
without looking its logs up in MongoDB; any other message (no log seen, or
only failed ones, which an unseen successful log could outweigh) is looked up.

What is kept follows the stream: each event of a log records it under the
message it names now (a failed log as such, so a log corrected to failure stops
counting), and takes it from the message it named before, if another. A job
reads what the watcher last saw, milliseconds behind the database: a log
corrected within them decides as it was read, and its correction's own event
then finds the message decided and counts the change (``status.notice_late_change``),
as for any correction after a decision.
"""

from __future__ import annotations

import logging
from typing import Any

import bson
import redis
from bson import ObjectId
from pymongo.database import Database
from redis.exceptions import RedisError

from jobs.communications import communications_for, deciding, is_delivery

log = logging.getLogger(__name__)

FIELDS = ("_id", "conv_message_id", "success", "account_id", "createdAt", "created")
"""What a decision reads of a log: the stream's events carry these, and this is what is kept."""

SEEN_TTL = 60
"""Seconds the logs seen for a message are kept after the last one: its job runs within milliseconds
(a retry later than this looks its log up)."""

LOGS_KEY = "msgstatus:seen-logs:"
"""Per message, a hash: log id -> the log (BSON) if it says delivered, else empty."""

OWNER_KEY = "msgstatus:seen-log-owner:"
"""Per log, the message it named when last seen."""

_RECORD = """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local mid, lid, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local owner_key = KEYS[1] .. lid
  local owner = redis.call('GET', owner_key)
  if owner and owner ~= mid then redis.call('HDEL', KEYS[2] .. owner, lid) end
  if mid == '' then
    redis.call('DEL', owner_key)
  else
    redis.call('SET', owner_key, mid, 'EX', ttl)
    redis.call('HSET', KEYS[2] .. mid, lid, value)
    redis.call('EXPIRE', KEYS[2] .. mid, ttl)
  end
end
"""


def remember(connection: redis.Redis, seen: list[tuple[str | None, dict[str, Any]]]) -> None:
    """Record logs as one getMore delivered them: (the message each names, or None, and the log)."""
    if not seen:
        return
    args: list[Any] = [SEEN_TTL]
    for message_id, found in seen:
        kept = {k: found[k] for k in FIELDS if k in found}
        named = str(ObjectId(message_id)) if message_id else ""  # the key a job reads: lower-case hex
        args += [named, str(found["_id"]), bson.encode(kept) if is_delivery(found.get("success")) else b""]
    connection.register_script(_RECORD)(keys=[OWNER_KEY, LOGS_KEY], args=args)


def delivering(connection: redis.Redis, message_ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
    """Those messages with a seen log that says delivered, each with its latest such log."""
    with connection.pipeline(transaction=False) as pipe:
        for oid in message_ids:
            pipe.hvals(f"{LOGS_KEY}{oid}")
        found = pipe.execute()
    chosen = {}
    for oid, values in zip(message_ids, found, strict=True):
        if latest := latest_delivery(values):
            chosen[oid] = latest
    return chosen


def latest_delivery(values: list[bytes]) -> dict[str, Any] | None:
    """The latest (by ``_id``) of the kept logs that say delivered (the others are kept empty)."""
    logs = [bson.decode(value) for value in values if value]
    return deciding(logs) if logs else None


def logs_for(db: Database, connection: redis.Redis, message_ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:  # type: ignore[type-arg]
    """Each message's deciding log: a seen one that says delivered, else as found in MongoDB."""
    try:
        chosen = delivering(connection, message_ids)
    except RedisError as error:
        log.debug("seen logs unavailable (%s); looking all %d up", error, len(message_ids))
        chosen = {}
    rest = [oid for oid in message_ids if oid not in chosen]
    return {**chosen, **communications_for(db, rest)}
