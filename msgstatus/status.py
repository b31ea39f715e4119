"""``msgstatus status``: what an operator asks first, and whether it is healthy."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import redis
from pymongo.database import Database
from rq import Queue

from core import metrics
from core.defaults import QUEUE
from core.settings import Settings
from jobs import communications, messages
from jobs.sweep import last_sweep
from msgstatus.idle import DISABLED
from watcher.lock import LeaderLock
from watcher.runner import STATE_KEY
from watcher.stream import STREAMS
from watcher.tokens import TokenStore

MAX_TOKEN_AGE = 60.0
"""Seconds after which a stream's unsaved token means the watcher is stuck (it re-saves every 10 s)."""

MAX_SLOW_RETRY_AGE = 3600.0
"""Seconds after which a message still waiting for slow retries makes the service unhealthy."""

MAX_SWEEP_AGE = 60.0
"""Seconds without a sweep job (at least three intervals) after which the scheduler or every worker is gone."""

FAILED_SHOWN = 20
"""Failed jobs and parked messages listed by message id; the counts cover all of them."""


def _age(epoch: float | None) -> float | None:
    return None if epoch is None else round(time.time() - epoch, 1)


def held(db: Database) -> dict[str, Any]:  # type: ignore[type-arg]
    """Messages waiting for a slow retry (how many, since when) and parked for an operator."""
    collection = db[messages.MESSAGES]
    slow = {**messages.TRACKED, f"{messages.HOLD}.kind": "retry"}
    oldest = collection.find_one(slow, {f"{messages.HOLD}.since": 1}, sort=[(f"{messages.HOLD}.since", 1)])
    since = (oldest or {}).get(messages.HOLD, {}).get("since")
    since = messages.as_utc(since) if since is not None else None
    return {
        "slow_retries": collection.count_documents(slow),
        "oldest_slow_retry_age_seconds": round((messages.now() - since).total_seconds(), 1) if since else None,
        "parked": collection.count_documents({**messages.TRACKED, f"{messages.HOLD}.kind": "parked"}),
    }


def sweep_age(connection: redis.Redis) -> float | None:
    """Seconds since a sweep job last ran; None if none has."""
    return _age(last_sweep(connection))


def sweeps_stopped(age: float | None, interval: int, max_age: float = MAX_SWEEP_AGE) -> str | None:
    """Why the sweeps look stopped (none has run, or none for too long), or None while they run."""
    if age is not None and age <= max(max_age, 3 * interval):
        return None
    since = "has run yet" if age is None else f"has run for {age:.0f}s"
    return (f"no sweep {since} (every {interval}s): `msgstatus schedule` or every worker is down, "
            "so nothing missed is found and no retry is moved back onto the queue")


def _age_of(document: dict[str, Any]) -> float:
    """Seconds since the document was written."""
    return round(max(0.0, (messages.now() - messages.inserted_at(document)).total_seconds()), 1)


def oldest_waiting_age(db: Database) -> float | None:  # type: ignore[type-arg]
    """Seconds since the oldest tracked message without a decision was written; None if there is none."""
    oldest = db[messages.MESSAGES].find_one(messages.TRACKED, {"created": 1}, sort=[("created", 1)])
    return None if oldest is None else _age_of(oldest)


def log_split(db: Database, horizon: int, held_count: int) -> dict[str, Any]:  # type: ignore[type-arg]
    """Undecided messages told apart: those that have their log (retrying, held or stuck: something is wrong)
    and those still waiting for it (the provider's business), within LOG_HORIZON or past it.

    ``held_count``: the messages waiting for a slow retry or parked (``held``), which a job ran on its log for.
    """
    collection = db[messages.MESSAGES]
    since = messages.now() - timedelta(seconds=horizon)
    unheld = list(collection.find(messages.sweepable(), {"created": 1}))
    named = communications.with_communication(db, [doc["_id"] for doc in unheld]) if unheld else set()
    with_log = [doc for doc in unheld if doc["_id"] in named]
    waiting = [doc for doc in unheld if doc["_id"] not in named]
    # Past the horizon: retired by a sweep, or not yet (the next sweep retires it)
    past_unretired = [doc for doc in waiting if not messages.within(doc, since)]
    held = {**messages.TRACKED, f"{messages.HOLD}.kind": {"$in": ["retry", "parked"]}}
    oldest_held = collection.find_one(held, {"created": 1}, sort=[("created", 1)])
    oldest_retired = collection.find_one(messages.retired(), {"created": 1}, sort=[("created", 1)])
    with_log_ages = [_age_of(doc) for doc in ([oldest_held] if oldest_held else []) + with_log]
    waiting_ages = [_age_of(doc) for doc in ([oldest_retired] if oldest_retired else []) + waiting]
    return {
        "with_log": len(with_log) + held_count,
        "oldest_with_log_age_seconds": max(with_log_ages, default=None),
        "waiting_for_log": {"within": len(waiting) - len(past_unretired),
                            "past": collection.count_documents(messages.retired()) + len(past_unretired)},
        "oldest_waiting_for_log_age_seconds": max(waiting_ages, default=None),
    }


def streams(connection: redis.Redis) -> dict[str, dict[str, float | None]]:
    """Per stream: how old its saved resume token is, and its last event (None: never)."""
    tokens = TokenStore(connection)
    found: dict[str, dict[str, float | None]] = {}
    for spec in STREAMS:
        info = tokens.info(spec.name)
        found[spec.name] = {
            "token_age_seconds": _age(info.get("saved")),
            "last_event_age_seconds": _age(info.get("last_event")),
        }
    return found


def collect(
    settings: Settings, connection: redis.Redis, db: Database,  # type: ignore[type-arg]
    max_token_age: float, max_slow_retry_age: float = MAX_SLOW_RETRY_AGE, max_sweep_age: float = MAX_SWEEP_AGE,
) -> dict[str, Any]:
    """The status report; ``healthy`` is False with ``problems`` saying why."""
    queue = Queue(QUEUE, connection=connection)
    failed_ids = queue.failed_job_registry.get_job_ids()
    failed = [job for job in queue.job_class.fetch_many(failed_ids[:FAILED_SHOWN], connection=connection) if job]
    state = {k.decode(): v.decode() for k, v in connection.hgetall(STATE_KEY).items()}  # type: ignore[union-attr]
    holder = LeaderLock.holder(connection)
    sweep_only = settings.sweep_only or state.get("mode") == "sweep-only"
    ages = streams(connection)
    holds = held(db)
    report: dict[str, Any] = {
        "queue": {
            "waiting": queue.count,
            "running": queue.started_job_registry.count,
            "scheduled_retries": queue.scheduled_job_registry.count,
            "failed": len(failed_ids),
            # A message's job and its follow-up can both fail on the same bad data: list it once
            "failed_messages": list(dict.fromkeys(str(job.args[0]) for job in failed if job.args)),
        },
        "messages": {
            "tracked_waiting": db[messages.MESSAGES].count_documents(messages.TRACKED),
            "oldest_waiting_age_seconds": oldest_waiting_age(db),
            **holds,
            **log_split(db, settings.log_horizon, holds["slow_retries"] + holds["parked"]),
            "parked_messages": [str(oid) for oid in messages.parked(db, limit=FAILED_SHOWN)],
        },
        "watcher": {
            "mode": "sweep-only" if sweep_only else ("active" if holder else "none"),
            "active": holder[:8] if holder else None,
        },
        "streams": ages,
        "sweep": {"interval_seconds": settings.sweep_interval, "last_age_seconds": sweep_age(connection)},
        "sweep_only": sweep_only,
        "metrics": metrics.read(connection),
    }
    report["disabled"] = None if settings.enabled else DISABLED
    # A switched-off service runs no watcher and no sweep on purpose: nothing to warn about.
    problems = [] if report["disabled"] else _problems(
        report, settings, holder, max_token_age, max_slow_retry_age, max_sweep_age)
    report["healthy"] = not problems
    report["problems"] = problems
    return report


def _problems(
    report: dict[str, Any], settings: Settings, holder: str | None,
    max_token_age: float, max_slow_retry_age: float, max_sweep_age: float,
) -> list[str]:
    """What makes the service unhealthy, each said for an operator."""
    problems = []
    if not report["sweep_only"]:
        if holder is None:
            problems.append("no active watcher (none holds the lock): events are not being followed")
        for name, stream in report["streams"].items():
            age = stream["token_age_seconds"]
            if age is None or age > max_token_age:
                problems.append(f"stream {name}: resume token {'missing' if age is None else f'{age:.0f}s old'}")
    if stopped := sweeps_stopped(report["sweep"]["last_age_seconds"], settings.sweep_interval, max_sweep_age):
        problems.append(stopped)
    slow_age = report["messages"]["oldest_slow_retry_age_seconds"]
    if slow_age is not None and slow_age > max_slow_retry_age:
        problems.append(
            f"{report['messages']['slow_retries']} messages wait for slow retries, the oldest for {slow_age:.0f}s: "
            "emits or the database keep failing (see the workers' warnings)"
        )
    return problems


def render(report: dict[str, Any]) -> str:
    """The report for a person."""
    q, m, w = report["queue"], report["messages"], report["watcher"]
    lines = [
        f"health:    {'OK' if report['healthy'] else 'UNHEALTHY'}",
        *([f"disabled:  {report['disabled']}: every process stays up, idle"] if report.get("disabled") else []),
        *(f"  - {p}" for p in report["problems"]),
        f"watcher:   {w['mode']}" + (f" ({w['active']})" if w["active"] else ""),
        f"queue:     {q['waiting']} waiting, {q['running']} running, {q['scheduled_retries']} retries scheduled,"
        f" {q['failed']} failed",
    ]
    if q["failed_messages"]:
        lines.append("  failed messages: " + ", ".join(q["failed_messages"]))
    oldest = m["oldest_waiting_age_seconds"]
    lines.append(
        f"messages:  {m['tracked_waiting']} tracked still waiting"
        + (f", oldest {oldest:.0f}s" if oldest is not None else "")
    )
    with_log, waiting, waiting_age = (m["oldest_with_log_age_seconds"], m["waiting_for_log"],
                                      m["oldest_waiting_for_log_age_seconds"])
    lines.append(
        f"  with their log, undecided: {m['with_log']}" + (f" (oldest {with_log:.0f}s)" if with_log is not None else "")
        + f"; waiting for their log: {waiting['within']} within LOG_HORIZON, {waiting['past']} past it"
        + (f" (oldest {waiting_age:.0f}s)" if waiting_age is not None else "")
    )
    slow_age = m["oldest_slow_retry_age_seconds"]
    lines.append(
        f"held:      {m['slow_retries']} waiting for slow retries"
        + (f" (the oldest since {slow_age:.0f}s)" if slow_age is not None else "")
        + f", {m['parked']} parked for an operator (bad data)"
    )
    if m["parked_messages"]:
        lines.append("  parked messages: " + ", ".join(m["parked_messages"])
                     + " (fix their data, then `msgstatus requeue --parked`)")
    sweep = report["sweep"]
    lines.append(f"sweep:     every {sweep['interval_seconds']}s, last "
                 + ("never" if sweep["last_age_seconds"] is None else f"{sweep['last_age_seconds']:.0f}s ago"))
    for name, info in report["streams"].items():
        token, event = info["token_age_seconds"], info["last_event_age_seconds"]
        lines.append(
            f"stream {name}: token {'-' if token is None else f'{token:.0f}s'} old, last event "
            + ("never" if event is None else f"{event:.0f}s ago")
        )
    return "\n".join(lines)
