"""The ``updateMessage`` emit to the conversation socket service, as the Node service sends it."""

from __future__ import annotations

import base64
import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import jwt
from bson import ObjectId
from bson.decimal128 import Decimal128

from core.defaults import JWT_TTL, MAX_BACKOFF
from core.settings import redact
from jobs.errors import EmitRejected, SocketUnavailable
from jobs.messages import as_utc

MAX_REDIRECTS = 5
"""307/308 redirects one emit follows at most."""

OUTSIDE_STATUS = frozenset({401, 403, 404, 405, 407, 408, 409, 425, 429})
"""4xx answers about us or the moment (credentials, address, rate), not the message: retried like a 5xx."""


def node_json(value: Any) -> Any:
    """A BSON value as Node's JSON.stringify of the Mongoose document would write it."""
    if isinstance(value, dict):
        return {key: node_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [node_json(item) for item in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return as_utc(value).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal128):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON.stringify writes NaN and Infinity as null
    return value


def socket_token(conversation_id: str, account_id: str, secret: str, now: float | None = None) -> str:
    """The short-lived HS256 JWT the socket service expects: the seed's claims and nothing else."""
    issued = int(time.time() if now is None else now)
    claims = {
        "conversation_id": conversation_id,
        "account_id": account_id,
        "type": "team",
        "iat": issued,
        "exp": issued + JWT_TTL,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def retry_after(value: str | None, now: float | None = None) -> int | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), at most MAX_BACKOFF; None if none."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0, min(math.ceil(seconds), int(MAX_BACKOFF)))


def idempotency_key(message_id: Any, communication_id: Any) -> str:
    """Names one decision: a socket service drops a second emit with the same key."""
    return f"{message_id}:{communication_id}"


def emit_update(
    http: httpx.Client, socket_url: str, message: dict[str, Any], account_id: str, secret: str,
    communication_id: Any,
) -> None:
    """POST the updated message; SocketUnavailable for what may pass, EmitRejected for what won't."""
    token = socket_token(str(message["sender_id"]), account_id, secret)
    try:
        response = http.post(
            f"{socket_url.rstrip('/')}/emit",
            json={"event": "updateMessage", "data": node_json(message)},
            headers={
                "Authorization": f"Bearer {token}",
                "x-account-id": account_id,
                "Idempotency-Key": idempotency_key(message["_id"], communication_id),
            },
            follow_redirects=False,
        )
        # 307 and 308 repeat the POST elsewhere, as axios followed them for the seed; httpx builds the next
        # request and drops the token on a redirect to another origin.
        for _ in range(MAX_REDIRECTS):
            if response.status_code not in (307, 308) or response.next_request is None:
                break
            response = http.send(response.next_request, follow_redirects=False)
    except httpx.HTTPError as error:  # connection refused, timeouts, protocol errors
        # Stored where operators read it (the hold, job meta, explain, the API): no credentials of the URL.
        raise SocketUnavailable(redact(f"emit to {socket_url} failed: {type(error).__name__}: {error}")) from error
    status = response.status_code
    if status < 300:
        return
    if status < 400:  # a redirect that would turn the POST into a GET, or one too many: about us, not the message
        raise SocketUnavailable(redact(
            f"socket service answered {status} to {response.url} (redirect to {response.headers.get('location')!r}):"
            " set CONVERSATION_SOCKET to where it points"))
    detail = redact(response.text[:200])
    if status >= 500 or status in OUTSIDE_STATUS:
        hint = " (check APP_SECRET and CONVERSATION_SOCKET)" if status in (401, 403, 404, 405) else ""
        wait = retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
        asked = f" (Retry-After: {wait}s)" if wait is not None else ""
        raise SocketUnavailable(f"socket service answered {status}: {detail}{hint}{asked}", retry_after=wait)
    raise EmitRejected(f"socket service refused the message with {status}: {detail} (not retried)")
