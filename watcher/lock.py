"""One active watcher: a Redis lock with a TTL that its holder renews while alive."""

from __future__ import annotations

import uuid

import redis

LOCK_KEY = "msgstatus:watcher:leader"

# Renew only our own lock; take it if it is gone (e.g. Redis restarted empty).
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLock:
    """``hold()`` takes or renews the lock and says whether we have it; ``release()`` gives it up."""

    def __init__(self, connection: redis.Redis, ttl: float, owner: str | None = None) -> None:
        self.redis = connection
        self.ttl_ms = int(ttl * 1000)
        self.owner = owner or uuid.uuid4().hex
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)

    def hold(self) -> bool:
        return bool(self._renew(keys=[LOCK_KEY], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[LOCK_KEY], args=[self.owner])

    @staticmethod
    def holder(connection: redis.Redis) -> str | None:
        value = connection.get(LOCK_KEY)
        return value.decode() if isinstance(value, bytes) else None
