"""Admin commands drivers' test suites send first, answered as mongod answers them.

``buildinfo`` (the lowercase spelling pymongo's ``server_info()`` sends) is
``buildInfo``; ``getParameter`` says whether test commands are on and which
feature compatibility version the server has; ``killAllSessions`` (sent before
each transactions test) aborts every open transaction.
"""

from __future__ import annotations

from typing import Any

from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext
from mongoeco.wire.sessions import WireSessionStore

from embedded.contexts import own_context

LOCAL = frozenset({"buildinfo", "getParameter", "killAllSessions"})

FEATURE_COMPATIBILITY = "7.0"
"""The feature compatibility version reported: that of the server version mongoeco reports."""


def install(executor: WireCommandExecutor, sessions: WireSessionStore, test_commands: bool) -> None:
    """Answer LOCAL's commands through ``executor``."""
    build, execute = executor._build_request_context, executor.execute_prepared

    def build_context(body: dict[str, Any], **kwargs: Any) -> WireRequestContext:
        name = next(iter(body), "")
        if name not in LOCAL:
            return build(body, **kwargs)
        if name == "buildinfo":
            return build({"buildInfo": 1, **{k: v for k, v in body.items() if k != name}}, **kwargs)
        return own_context(body, kwargs["connection"], executor._client)

    async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
        if context.command_name == "getParameter":
            return {"enableTestCommands": test_commands,
                    "featureCompatibilityVersion": {"version": FEATURE_COMPATIBILITY}, "ok": 1.0}
        if context.command_name == "killAllSessions":
            for session in list(sessions._sessions.values()):
                if session.session.transaction_active:
                    session.session.abort_transaction()
            return {"ok": 1.0}
        return await execute(context)

    executor._build_request_context = build_context  # type: ignore[method-assign]
    executor.execute_prepared = execute_prepared  # type: ignore[method-assign]
