"""Every metric msgstatus exports, declared once: name, help, labels. Code counts through these objects.

Counters and histograms live in one Redis hash, so that they add up across every
process and survive restarts; gauges are measured when ``/metrics`` is scraped.
A metric cannot be counted without being exported: ``render`` walks ``DECLARED``.
An update never fails the work it counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis

KEY = "msgstatus:metrics"
"""The Redis hash of every counter and histogram series."""

type Labels = Mapping[str, str]
type Sample = tuple[Labels, float]


@contextlib.contextmanager
def counting(connection: redis.Redis) -> Iterator[redis.client.Pipeline]:
    """A pipeline for several updates, sent at the end; a Redis error stops there, never reaching the work."""
    with connection.pipeline(transaction=False) as pipe:
        yield pipe
        with contextlib.suppress(redis.RedisError):
            pipe.execute()


def _series(name: str, labels: Labels) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    """The values of a counter's one label, each exported (as 0 until counted)."""
    kind: str = "gauge"

    def _check(self, labels: Labels) -> None:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, not {tuple(labels)}")
        if self.values and any(v not in self.values for v in labels.values()):
            raise ValueError(f"{self.name}: {dict(labels)} is not one of {self.values}")


@dataclass(frozen=True)
class Counter(Metric):
    kind: str = "counter"

    def inc(self, connection: redis.Redis | redis.client.Pipeline, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` (inside ``counting``, when its pipeline is sent)."""
        self._check(labels)
        if amount:
            with contextlib.suppress(redis.RedisError):
                connection.hincrbyfloat(KEY, _series(self.name, labels), amount)

    def zeros(self) -> list[str]:
        """The series exported as 0 until counted: each declared label value, or the one unlabelled series."""
        if self.values:
            return [_series(self.name, {self.labels[0]: v}) for v in self.values]
        return [] if self.labels else [self.name]


@dataclass(frozen=True)
class Gauge(Metric):
    """Measured at scrape time by whoever serves ``/metrics``; declared here all the same."""


@dataclass(frozen=True)
class Histogram(Metric):
    kind: str = "histogram"
    buckets: tuple[float, ...] = ()

    def observe(self, connection: redis.Redis, seconds: float) -> None:
        bound = next((f"{b:g}" for b in self.buckets if seconds <= b), "+Inf")
        with counting(connection) as pipe:
            pipe.hincrbyfloat(KEY, _series(f"{self.name}_bucket", {"le": bound}), 1)
            pipe.hincrbyfloat(KEY, f"{self.name}_sum", seconds)
            pipe.hincrbyfloat(KEY, f"{self.name}_count", 1)


# -- decisions and jobs ------------------------------------------------------

DECIDED = Counter(
    "msgstatus_messages_decided_total",
    "Messages decided from their communication log, by outcome (delivered=false: the provider reported a "
    "failure; not a fault of msgstatus).", ("delivered",), ("true", "false"))
NOT_DECIDED = Counter(
    "msgstatus_checks_without_decision_total",
    "Checks of a message that ended without a decision, by reason (no_log: its communication log is not "
    "there yet; not_free: decided meanwhile or claimed by another job).", ("reason",), ("no_log", "not_free"))
JOB_FAILURES = Counter(
    "msgstatus_job_failures_total",
    "Failed attempts to decide a message, by kind (bad_data: left in RQ's failed registry for an operator, "
    "the message parked; outside: the socket service, database or Redis failed, retried).", ("kind",),
    ("bad_data", "outside"))
RETRIES = Counter(
    "msgstatus_retries_total",
    "Retries scheduled after an outside failure, by schedule (fast: exponential backoff; slow: the message "
    "waits SLOW_RETRY seconds, or until an emit succeeds).", ("schedule",), ("fast", "slow"))
RETRIES_SHED = Counter(
    "msgstatus_retries_shed_total",
    "Retries not sent because the socket service was failing and the retry budget was spent; each counts as a "
    "failed attempt of its message.")
LATE_CHANGES = Counter(
    "msgstatus_log_changes_after_decision_total",
    "Decided messages whose communication log came to say otherwise (success corrected after the decision); "
    "the decision stands, as the seed never rewrites one.")
TAKEOVERS = Counter(
    "msgstatus_claims_taken_over_total", "Claims taken over because their job had died or their lease ran out.")
BATCHES = Counter("msgstatus_batches_total", "Batch jobs run (messages that arrived together).")
BATCHED = Counter("msgstatus_batched_messages_total", "Messages that went through batch jobs.")
INSERT_TO_EMIT = Histogram(
    "msgstatus_insert_to_emit_seconds", "Time from a communication log's insert to the emit of its decision.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0))

# -- the watcher ---------------------------------------------------------------

CHANGE_EVENTS = Counter(
    "msgstatus_change_events_total", "Change events received, by stream.", ("stream",),
    ("messages", "communications"))
BAD_EVENTS = Counter("msgstatus_bad_events_total", "Change events skipped because they name no message.")
BEFORE_LOG = Counter(
    "msgstatus_message_events_before_log_total",
    "Message inserts not enqueued because their log was not there yet (the log's insert brings them).")
HISTORY_LOST = Counter(
    "msgstatus_history_lost_recoveries_total",
    "Times a stream restarted from now because the server could not resume from its token.")
CATCH_UPS = Counter("msgstatus_catch_up_sweeps_total", "Catch-up sweeps the watcher enqueued.")
RECONNECTS = Counter("msgstatus_stream_reconnects_total", "Reconnections of a change stream after an error.")
NO_CHANGE_STREAMS = Counter(
    "msgstatus_sweep_only_fallbacks_total",
    "Times a watcher found that MongoDB offers no change streams and fell back to sweep-only.")
ENABLED = Gauge(
    "msgstatus_enabled",
    "1 while QM_CONVERSATIONS and QM_SUPPORT_MESSAGE_STATUS are on; 0 while switched off (every process idle).")
WATCHERS = Gauge(
    "msgstatus_watchers",
    "Watcher processes by role (active: follows the change streams; standby: waits for the lock; "
    "sweep_only: no change streams, the sweep finds messages).", ("role",))
TOKEN_AGE = Gauge(
    "msgstatus_stream_token_age_seconds",
    "Seconds since a stream's resume token was saved (re-saved every 10 s while the stream is alive).",
    ("stream",))

# -- the sweep -------------------------------------------------------------------

SWEEPS = Counter("msgstatus_sweeps_total", "Sweeps run.")
SWEEPS_DEFERRED = Counter(
    "msgstatus_sweeps_deferred_total", "Sweeps put off because status jobs already waited in the queue.")
SWEEP_EXAMINED = Counter("msgstatus_sweep_examined_messages_total", "Messages sweeps looked at.")
SWEEP_ENQUEUED = Counter("msgstatus_sweep_enqueued_messages_total", "Messages sweeps enqueued a status job for.")
SWEEP_DURATION = Histogram(
    "msgstatus_sweep_duration_seconds", "How long one sweep took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
SWEEP_INTERVAL = Gauge("msgstatus_sweep_interval_seconds", "Seconds between sweeps (SWEEP_INTERVAL).")

# -- what waits ------------------------------------------------------------------

QUEUED = Gauge("msgstatus_queued_jobs", "Status jobs waiting in the queue.")
SCHEDULED = Gauge("msgstatus_scheduled_retries", "Status jobs scheduled to run again (fast retries).")
FAILED = Gauge("msgstatus_failed_jobs", "Status jobs in RQ's failed registry (bad data, for an operator).")
SLOW_RETRIES = Gauge("msgstatus_slow_retry_messages", "Messages waiting for a slow retry.")
PARKED = Gauge("msgstatus_parked_messages", "Messages parked for an operator (bad data).")
UNDECIDED_AGE = Gauge(
    "msgstatus_oldest_undecided_message_age_seconds",
    "Age of the oldest tracked message without a decision, with or without a log (0 when there is none).")
WITH_LOG = Gauge(
    "msgstatus_undecided_with_log_messages",
    "Tracked messages that have their communication log and no decision yet (retrying, held, parked, or stuck).")
WITH_LOG_AGE = Gauge(
    "msgstatus_oldest_undecided_with_log_age_seconds",
    "Age of the oldest tracked message that has its log and no decision (0 when there is none): the signal "
    "that something is wrong.")
WAITING_FOR_LOG = Gauge(
    "msgstatus_waiting_for_log_messages",
    "Tracked messages whose communication log has not come (the provider's business), within LOG_HORIZON or "
    "past it.", ("horizon",), ("within", "past"))
WAITING_FOR_LOG_AGE = Gauge(
    "msgstatus_oldest_waiting_for_log_age_seconds",
    "Age of the oldest tracked message whose log has not come (0 when there is none).")

DECLARED: tuple[Metric, ...] = tuple(value for value in dict(globals()).values() if isinstance(value, Metric))
"""Every metric above, in the order they are exported."""


def read(connection: redis.Redis) -> dict[str, float]:
    """Every counter and histogram series, by its exported name."""
    raw = connection.hgetall(KEY)
    return {key.decode(): float(value) for key, value in raw.items()}  # type: ignore[union-attr]


def value(connection: redis.Redis, metric: Counter, **labels: str) -> float:
    """One counter series' value (0 if never counted)."""
    metric._check(labels)
    raw = connection.hget(KEY, _series(metric.name, labels))
    return float(raw) if raw else 0.0  # type: ignore[arg-type]


def render(stored: Mapping[str, float], gauges: Mapping[Gauge, Iterable[Sample]]) -> str:
    """Prometheus's text format: every declared metric, stored series and measured gauges alike."""
    lines: list[str] = []
    for metric in DECLARED:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        if isinstance(metric, Histogram):
            lines += _histogram(metric, stored)
        elif isinstance(metric, Counter):
            counted = {key: v for key, v in stored.items() if key == metric.name or key.startswith(metric.name + "{")}
            series = {**dict.fromkeys(metric.zeros(), 0.0), **counted}
            lines += [f"{key} {_number(v)}" for key, v in sorted(series.items())]
        elif isinstance(metric, Gauge):
            lines += [f"{_series(metric.name, labels)} {_number(v)}" for labels, v in gauges.get(metric, ())]
    return "\n".join(lines) + "\n"


def _histogram(metric: Histogram, stored: Mapping[str, float]) -> list[str]:
    lines, cumulative = [], 0.0
    for bound in [f"{b:g}" for b in metric.buckets] + ["+Inf"]:
        series = _series(f"{metric.name}_bucket", {"le": bound})
        cumulative += stored.get(series, 0.0)
        lines.append(f"{series} {_number(cumulative)}")
    total, count = stored.get(f"{metric.name}_sum", 0.0), stored.get(f"{metric.name}_count", 0.0)
    return [*lines, f"{metric.name}_sum {_number(total)}", f"{metric.name}_count {_number(count)}"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
