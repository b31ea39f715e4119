"""The retry budget: while the socket service fails, retries may send it no more than new messages earn.

Each message's own backoff spaces its attempts, but a backlog of thousands of
messages, each on its own schedule, would still ask a struggling service for
thousands of emits. So while attempts fail (RECENT_KEY lives), a retry
(any attempt after a message's first) spends a token from one bucket shared by
every worker; a message's first attempt earns EARNED tokens, and the bucket
refills FLOOR tokens a second on its own, up to CAP. A retry that finds the bucket
empty is shed: it counts as a failed attempt of its message, without a request,
and the message goes on along its schedule (a fast retry later, then its slow
retry, or at once when the failures stop, ``jobs.wakeup``). Requests to a failing
service are thus at most ``(1 + EARNED) * new messages + FLOOR`` a second,
whatever the backlog. While no attempt fails, retries spend nothing.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

RECENT_KEY = "msgstatus:outside:recent"
"""Lives QUIET seconds after each failed attempt: while it does, the failures have not stopped."""

QUIET = 10
"""Seconds without a failed attempt after which the failures count as stopped."""

KEY = "msgstatus:outside:budget"
"""A hash: the bucket's tokens and when they were last counted (Unix seconds)."""

EARNED = 1.0
"""Tokens a message's first attempt earns: enough for the retries of a service failing 40% of its emits."""

FLOOR = 1.0
"""Tokens a second the bucket earns by itself, so that a backlog is tried even while no message is new."""

CAP = 10.0
"""Tokens the bucket holds at most: the burst of retries a failing service can get."""

TTL = 3600
"""Seconds an untouched bucket is kept (it is full again long before)."""

_SCRIPT = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[5])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
local now = tonumber(ARGV[1])
tokens = math.min(tonumber(ARGV[5]), tokens + math.max(0, now - at) * tonumber(ARGV[4]) + tonumber(ARGV[2]))
local granted = 1
if tonumber(ARGV[3]) > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  if tokens >= 1 then tokens = tokens - 1 else granted = 0 end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return granted
"""


def _call(client: Redis | Pipeline, earned: float, take: int) -> object:
    # A pipeline loads the script before it sends the pipeline; the clock is the caller's, as Redis
    # before 5 cannot write after reading its own TIME in a script.
    return client.register_script(_SCRIPT)(
        keys=[KEY, RECENT_KEY], args=[repr(time.time()), repr(earned), take, FLOOR, CAP, TTL], client=client)


def earn(pipe: Pipeline, first_attempts: int) -> None:
    """Add to ``pipe``: ``first_attempts`` messages were tried for the first time (only counts while failing)."""
    if first_attempts:
        _call(pipe, EARNED * first_attempts, 0)


def note_failure(pipe: Pipeline) -> None:
    """Add to ``pipe``: an attempt failed, so for QUIET seconds retries spend the budget."""
    pipe.set(RECENT_KEY, "1", ex=QUIET)


def allow_retry(redis: Redis) -> bool:
    """Whether a retry may send its emit now (always, while no attempt fails); spends a token if so."""
    try:
        return bool(_call(redis, 0.0, 1))
    except RedisError:  # no budget to read: the message's own schedule is the only bound
        return True
