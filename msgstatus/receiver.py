"""A small stand-in for the conversation socket service: ``POST /emit``, JWT verified, emits recorded.

Used by the demo and the tests. It verifies what the real service would: the
HS256 signature with APP_SECRET, the expiry, the seed's claims, and that
``x-account-id`` matches the token's ``account_id``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

EXPECTED_CLAIMS = {"conversation_id", "account_id", "type", "iat", "exp"}


@dataclass
class Emit:
    """One accepted ``updateMessage`` emit."""

    received: float
    headers: dict[str, str]
    body: dict[str, Any]
    claims: dict[str, Any]
    arrived: float = 0.0
    """When the request came in (``received`` is when it was answered, after any delay)."""

    @property
    def message_id(self) -> str:
        return str(self.body["data"]["_id"])


@dataclass
class Behaviour:
    """How the receiver answers: a status to return, or a delay before answering."""

    status: int = 200
    delay: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    by_message: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per message id: the status and delay of its next emit (then it is forgotten)."""
    retry_after: str | None = None
    """A Retry-After header sent with every 429 and 503."""
    moved: int | None = None
    """A redirect status (301, 307...) that ``POST /emit`` answers, pointing at ``MOVED_PATH`` on this server."""
    shedding: dict[int, float] = field(default_factory=dict)
    """Statuses answered at random instead of ``status``, each with its probability (``{503: 0.3, 429: 0.1}``)."""
    rng: random.Random = field(default_factory=lambda: random.Random(0))


MOVED_PATH = "/moved/emit"
"""Where the receiver takes emits besides ``/emit``: the target of its redirects."""


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 overflows when two workers emit 8 at a time each, and Linux then
    # resets some of the connections: failures the socket service never meant.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (a killed worker, a timed-out emit) is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SocketReceiver:
    """A threaded HTTP server on 127.0.0.1; ``start()``, ``emits``, ``stop()``."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.emits: list[Emit] = []
        self.rejected: list[tuple[int, str]] = []
        self.requests = 0
        self.arrivals: list[float] = []
        """When each POST /emit came in (time.time()), answered or not."""
        self.answers: list[tuple[float, str, int, float]] = []
        """Each POST /emit answered: when it came in, its message id ('' if unreadable), the status it was
        given, and when (after any delay)."""
        self.behaviour = Behaviour()
        self.listeners: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = _Server(("127.0.0.1", port), self._handler())
        # stop() waits for handlers, which end a delay early once stopped: no socket outlives it.
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SocketReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def emits_for(self, message_id: str) -> list[Emit]:
        with self._lock:
            return [e for e in self.emits if e.message_id == message_id]

    def _answer(self, raw: bytes, arrived: float) -> tuple[int, float]:
        try:
            message_id = str(json.loads(raw)["data"]["_id"])
        except (ValueError, KeyError, TypeError):
            message_id = ""
        with self._lock:
            self.requests += 1
            self.arrivals.append(arrived)
            status, delay = self._choose(message_id)
        if delay:
            self._stopped.wait(delay)
        with self._lock:
            self.answers.append((arrived, message_id, status, time.time()))
        return status, delay

    def _choose(self, message_id: str) -> tuple[int, float]:
        behaviour = self.behaviour
        if message_id in behaviour.by_message:
            return behaviour.by_message.pop(message_id)
        if behaviour.fail_next:
            return behaviour.fail_next.pop(0), 0.0
        draw = behaviour.rng.random()
        for status, probability in behaviour.shedding.items():
            if draw < probability:
                return status, behaviour.delay
            draw -= probability
        return behaviour.status, behaviour.delay

    def _verify(self, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise ValueError("no bearer token")
        claims = jwt.decode(auth[7:], self.secret, algorithms=["HS256"], options={"require": ["exp", "iat"]})
        if set(claims) != EXPECTED_CLAIMS or claims["type"] != "team":
            raise ValueError(f"unexpected claims {sorted(claims)}")
        if headers.get("x-account-id") != claims["account_id"]:
            raise ValueError("x-account-id does not match the token")
        if body.get("event") != "updateMessage" or not isinstance(body.get("data"), dict):
            raise ValueError("not an updateMessage event")
        return claims

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                if self.path == "/emit" and receiver.behaviour.moved:
                    self.send_response(receiver.behaviour.moved)
                    self.send_header("location", MOVED_PATH)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                status, _ = receiver._answer(raw, arrived)
                if status == 200 and self.path in ("/emit", MOVED_PATH):
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    try:
                        body = json.loads(raw)
                        claims = receiver._verify(headers, body)
                    except (ValueError, jwt.PyJWTError) as error:
                        with receiver._lock:
                            receiver.rejected.append((401, str(error)))
                        status = 401
                    else:
                        emit = Emit(time.time(), headers, body, claims, arrived)
                        with receiver._lock:
                            receiver.emits.append(emit)
                        for listener in receiver.listeners:
                            listener(emit)
                elif self.path not in ("/emit", MOVED_PATH):
                    status = 404
                self.send_response(status)
                if status in (429, 503) and receiver.behaviour.retry_after:
                    self.send_header("retry-after", receiver.behaviour.retry_after)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": %s}' % (b"true" if status == 200 else b"false"))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
