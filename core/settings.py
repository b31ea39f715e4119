"""All configuration, read from the environment once (in ``main``) and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

from core import defaults

_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/@\s:]*)(?P<password>:[^@\s]*)?@", re.IGNORECASE
)


def _mask(match: re.Match[str]) -> str:
    # With a password, the user stays readable; a user alone (a token as the user name) is the secret.
    if match["password"] is not None:
        return f"{match['head']}{match['user']}:***@"
    return f"{match['head']}***@"


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***`` (the user kept beside a password)."""
    return _URL_CREDENTIALS.sub(_mask, text)


class ConfigError(ValueError):
    """A variable has a value msgstatus cannot use; the message names it and what is expected."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a switch: use one of true/false, 1/0, yes/no, on/off")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number: expected seconds, e.g. {name}={default:g}") from None
    if not value >= minimum:
        raise ConfigError(f"{name}={raw!r} is too small: expected at least {minimum:g} seconds")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or int(raw) < minimum:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds >= {minimum}, e.g. {name}={default}")
    return int(raw)


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], example: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{name} is not a {'/'.join(schemes)} URL: expected something like {example}")
    return raw


def _redis_url(env: Mapping[str, str]) -> str | None:
    url = _url(env, "REDIS_URL", ("redis", "rediss", "unix"), "redis://localhost:6379/0")
    if url or not (env.get("REDIS_HOST") or env.get("REDIS_PORT")):
        return url
    host = env.get("REDIS_HOST") or "localhost"
    port = env.get("REDIS_PORT") or "6379"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"REDIS_PORT={port!r} is not a TCP port: expected a number from 1 to 65535")
    return f"redis://{host}:{port}/0"


@dataclass(frozen=True)
class Settings:
    """Everything msgstatus reads from its environment."""

    mongo_url: str
    redis_url: str
    conversation_socket: str | None
    app_secret: str = field(repr=False)
    embedded_mongo: bool = True
    embedded_redis: bool = True
    sweep_interval: int = defaults.SWEEP_INTERVAL
    claim_ttl: float = defaults.CLAIM_TTL
    heartbeat_ttl: float = defaults.HEARTBEAT_TTL
    fast_attempts: int = defaults.FAST_ATTEMPTS
    slow_retry: int = defaults.SLOW_RETRY
    log_horizon: int = defaults.LOG_HORIZON
    enabled: bool = True
    hooks: bool = False
    sweep_only: bool = False
    log_level: str = "INFO"
    log_format: str = "text"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings, or raise ConfigError naming the variable at fault."""
        env = os.environ if env is None else env
        mongo_url = _url(env, "MONGO_DB_URL", ("mongodb", "mongodb+srv"), "mongodb://localhost:27017/app")
        redis_url = _redis_url(env)
        socket = _url(env, "CONVERSATION_SOCKET", ("http", "https"), "http://localhost:6001")
        embedded_mongo = mongo_url is None
        secret = env.get("APP_SECRET", "")
        if not secret:
            if not embedded_mongo:
                raise ConfigError(
                    "APP_SECRET is missing: set it to the conversation socket service's JWT secret "
                    "(its own APP_SECRET); only the embedded default has one of its own"
                )
            secret = defaults.EMBEDDED_APP_SECRET
        level = env.get("LOG_LEVEL", "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL={level!r} is not a level: use DEBUG, INFO, WARNING or ERROR")
        log_format = env.get("LOG_FORMAT", "text").lower()
        if log_format not in {"text", "json"}:
            raise ConfigError(f"LOG_FORMAT={log_format!r} is not a format: use text or json")
        return cls(
            mongo_url=mongo_url or defaults.EMBEDDED_MONGO_URL,
            redis_url=redis_url or defaults.EMBEDDED_REDIS_URL,
            conversation_socket=socket,
            app_secret=secret,
            embedded_mongo=embedded_mongo,
            embedded_redis=redis_url is None,
            sweep_interval=_whole(env, "SWEEP_INTERVAL", defaults.SWEEP_INTERVAL, 1),
            claim_ttl=_number(env, "CLAIM_TTL", defaults.CLAIM_TTL, 1),
            heartbeat_ttl=_number(env, "HEARTBEAT_TTL", defaults.HEARTBEAT_TTL, 2 * defaults.HEARTBEAT_EVERY),
            fast_attempts=_whole(env, "FAST_ATTEMPTS", defaults.FAST_ATTEMPTS, 1),
            slow_retry=_whole(env, "SLOW_RETRY", defaults.SLOW_RETRY, 1),
            log_horizon=_whole(env, "LOG_HORIZON", defaults.LOG_HORIZON, 60),
            enabled=_flag(env, "QM_CONVERSATIONS", True) and _flag(env, "QM_SUPPORT_MESSAGE_STATUS", True),
            hooks=_flag(env, "QM_HOOKS", False),
            sweep_only=_flag(env, "SWEEP_ONLY", False),
            log_level=level,
            log_format=log_format,
        )

    def __repr__(self) -> str:
        shown = (f"{f.name}={redact(repr(getattr(self, f.name)))}" for f in fields(self) if f.repr)
        return f"Settings({', '.join(shown)})"

    @property
    def short_secret(self) -> bool:
        """APP_SECRET is shorter than HS256 wants: accepted, so that an existing socket service's secret works."""
        return len(self.app_secret.encode()) < defaults.MIN_SECRET_BYTES

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (e.g. ``sweep_only`` from a command-line flag)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def database(self) -> str:
        """The database named in MONGO_DB_URL, else msgstatus's default."""
        path = urlsplit(self.mongo_url).path.lstrip("/")
        return path or defaults.DATABASE

    def require_socket(self) -> str:
        """CONVERSATION_SOCKET, which workers cannot do without."""
        if not self.conversation_socket:
            raise ConfigError(
                "CONVERSATION_SOCKET is not set: workers POST to <CONVERSATION_SOCKET>/emit, "
                "e.g. CONVERSATION_SOCKET=http://localhost:6001"
            )
        return self.conversation_socket


VARIABLES = (
    "MONGO_DB_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "APP_SECRET", "CONVERSATION_SOCKET",
    "SWEEP_INTERVAL", "CLAIM_TTL", "HEARTBEAT_TTL", "FAST_ATTEMPTS", "SLOW_RETRY", "LOG_HORIZON",
    "QM_CONVERSATIONS", "QM_SUPPORT_MESSAGE_STATUS", "QM_HOOKS",
    "SWEEP_ONLY", "LOG_LEVEL", "LOG_FORMAT", "DASHBOARD_USER", "DASHBOARD_PASSWORD", "TRIGGER_TOKEN",
)
"""Every environment variable msgstatus reads (the last three by ``dashboard`` and ``api`` only)."""
