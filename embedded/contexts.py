"""Request contexts: those of the commands this server answers itself (which mongoeco's validation would
refuse), and what a context tells of its client."""

from __future__ import annotations

from typing import Any

from mongoeco.api import AsyncMongoClient
from mongoeco.core.expression_context import ExpressionExecutionContext
from mongoeco.wire.capabilities import resolve_wire_command_capability
from mongoeco.wire.connections import WireConnectionContext
from mongoeco.wire.requests import WireRequestContext


def own_context(
    body: dict[str, Any], connection: WireConnectionContext, client: AsyncMongoClient
) -> WireRequestContext:
    """The context of ``body``'s command, unvalidated: its document without ``$``-fields and ``lsid``."""
    name = next(iter(body), "")
    return WireRequestContext(
        db_name=body.get("$db", "admin"),
        command_name=name,
        command_document={k: v for k, v in body.items() if not k.startswith("$") and k != "lsid"},
        raw_body=body,
        capability=resolve_wire_command_capability(name),
        connection=connection,
        execution_context=ExpressionExecutionContext(now=client._resolve_now()),
    )


def app_name(context: WireRequestContext) -> str | None:
    """The ``appName`` the command's client gave in its handshake, if any."""
    metadata = context.connection.client_metadata or {}
    application = metadata.get("application")
    return application.get("name") if isinstance(application, dict) else None
