"""Which processes follow the change streams, announced in Redis so that ``/metrics`` can count them."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Literal

import redis

Role = Literal["active", "standby", "sweep_only"]

ROLES: tuple[Role, ...] = ("active", "standby", "sweep_only")

PREFIX = "msgstatus:watcher:role:"
"""Per process: its role, expiring unless the process renews it."""

ROLE_TTL = 15
"""Seconds an announcement outlives the last renewal (a killed process drops out of the count)."""


def announce(connection: redis.Redis, owner: str, role: Role) -> None:
    """Say (again) that process ``owner`` plays ``role``."""
    with contextlib.suppress(redis.RedisError):
        connection.set(f"{PREFIX}{owner}", role, ex=ROLE_TTL)


def withdraw(connection: redis.Redis, owner: str) -> None:
    with contextlib.suppress(redis.RedisError):
        connection.delete(f"{PREFIX}{owner}")


def count(connection: redis.Redis) -> Counter[str]:
    """How many live processes play each role (every role present, 0 if none)."""
    found: Counter[str] = Counter(dict.fromkeys(ROLES, 0))
    keys = list(connection.scan_iter(match=f"{PREFIX}*", count=100))
    for value in connection.mget(keys) if keys else []:
        if value is not None:
            found[value.decode() if isinstance(value, bytes) else str(value)] += 1
    return found
