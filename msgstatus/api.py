"""``msgstatus api``: Prometheus metrics, a health check, ``explain`` over HTTP, and the manual trigger
(with QM_HOOKS)."""

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
from bson import ObjectId
from pymongo.database import Database

from core import metrics
from core.defaults import LOOPBACK, SWEEP_BATCH
from core.settings import ConfigError, Settings
from jobs import messages
from jobs.queueing import Enqueuer, status_queue
from jobs.sweep import sweep
from msgstatus.explain import UNKNOWN, explain
from msgstatus.measure import gauges

log = logging.getLogger(__name__)

TRIGGER_PATH = "/api/trigger/conversations/support-message-status"
MESSAGES_PATH = "/api/messages/"
"""``GET /api/messages/<id>``: ``msgstatus explain`` as JSON (200 decided or not, 404 no such message, 400 bad id)."""


def sweep_now(settings: Settings, connection: redis.Redis) -> dict[str, Any]:
    """One sweep in this process (the manual trigger); what it found and enqueued."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    with client:
        db = client[settings.database]
        messages.ensure_indexes(db)
        horizon = None if settings.sweep_only else settings.log_horizon
        return sweep(db, Enqueuer(status_queue(connection)), SWEEP_BATCH, horizon).as_dict()


def prometheus(settings: Settings, connection: redis.Redis, db: Database) -> str:  # type: ignore[type-arg]
    """The metrics in Prometheus's text format."""
    return metrics.render(metrics.read(connection), gauges(settings, connection, db))


class ApiServer:
    """A small threaded HTTP server; ``run()`` until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, host: str, port: int, trigger_token: str | None) -> None:
        if settings.hooks and host not in LOOPBACK and not trigger_token:
            raise ConfigError(
                f"QM_HOOKS is on and the API listens on {host}, beyond loopback: set TRIGGER_TOKEN so "
                "that the manual trigger needs `Authorization: Bearer <token>`"
            )
        self.settings, self.trigger_token = settings, trigger_token
        self.public = host not in LOOPBACK
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=3000, socketTimeoutMS=5000)
        self.db = self.client[settings.database]
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
            self.client.close()
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
                    self._send(200, prometheus(api.settings, api.redis, api.db), "text/plain; version=0.0.4")
                elif self.path.startswith(MESSAGES_PATH):
                    self._explain(self.path.removeprefix(MESSAGES_PATH))
                elif self.path == "/healthz":
                    self._send(200, '{"ok": true}')
                else:
                    self._send(404, '{"error": "not found"}')

            def _explain(self, message_id: str) -> None:
                # Message and account ids are for operators: beyond loopback only with the trigger's token.
                if api.public and not api.trigger_token:
                    self._send(403, '{"error": "listening beyond loopback: set TRIGGER_TOKEN to allow this"}')
                elif not api._authorized(self.headers.get("authorization")):
                    self._send(401, '{"error": "a valid Authorization: Bearer <TRIGGER_TOKEN> is required"}')
                else:
                    report = explain(api.settings, api.redis, api.db, message_id)
                    status = 200 if report["exit"] != UNKNOWN else (404 if ObjectId.is_valid(message_id) else 400)
                    self._send(status, json.dumps(report))

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
