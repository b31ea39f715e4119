"""``msgstatus dashboard``: rq-dashboard on loopback against msgstatus's Redis, basic auth if configured."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, request

from core.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings, username: str | None, password: str | None) -> Flask:
    """The rq-dashboard Flask app, its Redis set, guarded by basic auth when a user is given."""
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import setup_rq_connection

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["DEPRECATED_OPTIONS"] = []
    setup_rq_connection(app)
    if username:
        expected = (username.encode(), (password or "").encode())

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
    if host not in ("127.0.0.1", "localhost", "::1") and not username:
        log.warning("dashboard on %s without DASHBOARD_USER: anyone who reaches it can delete jobs", host)
    log.info("rq-dashboard on http://%s:%d/ (%s)", host, port, "basic auth" if username else "no auth")
    make_app(settings, username, password).run(host=host, port=port)
