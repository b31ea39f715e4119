"""``msgstatus api``: Prometheus metrics, a health check, and the manual trigger (with QM_HOOKS)."""

from __future__ import annotations

import hmac
import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import pymongo
import redis
from rq import Queue

from core import counters
from core.defaults import QUEUE, SWEEP_BATCH
from core.settings import ConfigError, Settings
from jobs import messages
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import sweep

log = logging.getLogger(__name__)

TRIGGER_PATH = "/api/trigger/conversations/support-message-status"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

COUNTER_HELP = {
    "jobs_delivered": "Status jobs that marked a message delivered.",
    "jobs_undelivered": "Status jobs that marked a message not delivered (delivered: false).",
    "jobs_failed": "Status jobs that failed for good on bad data (in RQ's failed registry, message parked).",
    "jobs_retried": "Status job attempts that failed for an outside cause and were scheduled again.",
    "jobs_held": "Messages whose attempts failed for an outside cause and now wait for a slow retry.",
    "jobs_waiting": "Status jobs that found no communication log yet.",
    "jobs_skipped": "Status jobs for messages already decided or claimed.",
    "change_events_messages": "Change events received on support_messages.",
    "change_events_communications": "Change events received on communications.",
    "bad_events": "Change events skipped because they name no message.",
    "message_events_before_their_log": "Message inserts not enqueued: no log yet (the log's insert brings them).",
    "batches_run": "Batch jobs run (messages that arrived together).",
    "batched_messages": "Messages that went through batch jobs.",
    "sweeps_run": "Sweeps run.",
    "sweep_examined": "Messages sweeps looked at.",
    "sweep_enqueued": "Status jobs sweeps enqueued.",
    "claims_taken_over": "Claims taken over because their job had died or their lease ran out.",
    "history_lost_recoveries": "Times a stream restarted from now because its token could not resume.",
    "catch_up_sweeps": "Catch-up sweeps the watcher enqueued.",
    "stream_reconnects": "Reconnections of a change stream after an error.",
}


def sweep_now(settings: Settings, connection: redis.Redis) -> dict[str, Any]:
    """One sweep in this process (the manual trigger); what it found and enqueued."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    with client:
        db = client[settings.database]
        messages.ensure_indexes(db)
        return sweep(db, Enqueuer(status_queue(connection)), SWEEP_BATCH).as_dict()


def prometheus(connection: redis.Redis) -> str:
    """The metrics in Prometheus's text format."""
    values = counters.read(connection)
    lines = []
    for name, help_text in COUNTER_HELP.items():
        metric = f"msgstatus_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {values.get(name, 0)}"]
    queue = Queue(QUEUE, connection=connection)
    for name, value, help_text in (
        ("queue_waiting", queue.count, "Status jobs waiting in the queue."),
        ("queue_failed", queue.failed_job_registry.count, "Status jobs in the failed registry."),
    ):
        lines += [f"# HELP msgstatus_{name} {help_text}", f"# TYPE msgstatus_{name} gauge", f"msgstatus_{name} {value}"]
    latency = counters.read_latency(connection)
    metric = "msgstatus_insert_to_emit_seconds"
    lines += [f"# HELP {metric} Time from a communication's insert to its emit.", f"# TYPE {metric} histogram"]
    cumulative = 0.0
    for bound in [f"{b:g}" for b in counters.LATENCY_BUCKETS] + ["+Inf"]:
        cumulative += latency.get(bound, 0.0)
        lines.append(f'{metric}_bucket{{le="{bound}"}} {int(cumulative)}')
    lines += [f"{metric}_sum {latency.get('sum', 0.0)}", f"{metric}_count {int(latency.get('count', 0))}"]
    return "\n".join(lines) + "\n"


class ApiServer:
    """A small threaded HTTP server; ``run()`` until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, host: str, port: int, trigger_token: str | None) -> None:
        if settings.hooks and host not in LOOPBACK and not trigger_token:
            raise ConfigError(
                f"QM_HOOKS is on and the API listens on {host}, beyond loopback: set TRIGGER_TOKEN so "
                "that the manual trigger needs `Authorization: Bearer <token>`"
            )
        self.settings, self.trigger_token = settings, trigger_token
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True

    def run(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=self.server.shutdown).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        host, port = self.server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics; manual trigger %s", host, port,
                 "on" if self.settings.hooks else "off (QM_HOOKS)")
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()
            self.redis.close()

    def _authorized(self, header: str | None) -> bool:
        if not self.trigger_token:
            return True
        expected = f"Bearer {self.trigger_token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str, kind: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, prometheus(api.redis), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    self._send(200, '{"ok": true}')
                else:
                    self._send(404, '{"error": "not found"}')

            def do_POST(self) -> None:
                if self.path != TRIGGER_PATH:
                    self._send(404, '{"error": "not found"}')
                elif not api.settings.hooks:
                    self._send(404, json.dumps({"error": "the manual trigger is off: set QM_HOOKS=true"}))
                elif not api._authorized(self.headers.get("authorization")):
                    self._send(401, '{"error": "a valid Authorization: Bearer <TRIGGER_TOKEN> is required"}')
                else:
                    result = sweep_now(api.settings, api.redis)
                    log.info("manual trigger: %s", result)
                    self._send(200, json.dumps({"ok": True, "sweep": result}))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
