"""``msgstatus dashboard``: rq-dashboard on loopback against msgstatus's Redis, basic auth if configured."""

from __future__ import annotations

import hmac
import logging
import signal
from types import FrameType

from flask import Flask, Response, request

from core.defaults import LOOPBACK
from core.settings import ConfigError, Settings

log = logging.getLogger(__name__)


def check_auth(host: str, username: str | None, password: str | None) -> None:
    """Refuse a dashboard that anyone reaching it could use: it can delete the failed jobs of parked messages."""
    if username and not password:
        raise ConfigError(
            f"DASHBOARD_USER={username!r} is set but DASHBOARD_PASSWORD is empty: set a password "
            "(basic auth with an empty password lets anyone in)"
        )
    if password and not username:
        raise ConfigError("DASHBOARD_PASSWORD is set but DASHBOARD_USER is not: set both, or neither on loopback")
    if host not in LOOPBACK and not username:
        raise ConfigError(
            f"the dashboard would listen on {host} without a password, and it can delete failed jobs: "
            "set DASHBOARD_USER and DASHBOARD_PASSWORD, or listen on 127.0.0.1"
        )


def make_app(settings: Settings, username: str | None, password: str | None) -> Flask:
    """The rq-dashboard Flask app, its Redis set, guarded by basic auth when a user is given."""
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import setup_rq_connection

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["DEPRECATED_OPTIONS"] = []
    setup_rq_connection(app)
    if username and password:
        expected = (username.encode(), password.encode())

        @app.before_request
        def require_basic_auth() -> Response | None:
            auth = request.authorization
            given = (
                (auth.username or "").encode() if auth else b"",
                (auth.password or "").encode() if auth else b"",
            )
            # Compare both in constant time, so a wrong user and a wrong password look alike.
            ok = hmac.compare_digest(given[0], expected[0]) & hmac.compare_digest(given[1], expected[1])
            if auth is None or not ok:
                return Response("authentication required", 401, {"WWW-Authenticate": 'Basic realm="msgstatus"'})
            return None

    return app


def run_dashboard(settings: Settings, host: str, port: int, username: str | None, password: str | None) -> None:
    """Serve the dashboard until stopped; ConfigError (before listening) for an unsafe start."""
    check_auth(host, username, password)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("dashboard stopping (%s)", signal.Signals(signum).name)
        raise KeyboardInterrupt  # Werkzeug's serve_forever ends on it and closes its socket

    signal.signal(signal.SIGTERM, stop)
    log.info("rq-dashboard on http://%s:%d/ (%s)", host, port, "basic auth" if username else "no auth")
    make_app(settings, username, password).run(host=host, port=port)
