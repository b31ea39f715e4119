"""The embedded MongoDB-compatible server: mongoeco's wire proxy, made fit to serve.

In memory, one process, one asyncio loop. It adds to mongoeco's proxy the
change streams (``embedded.changestream``), document-level transaction
conflicts and constant-time inserts (``embedded.engine``), the replies of a
one-node replica set's primary (``embedded.replset``), retryable writes and
transactions that end as MongoDB's do (``embedded.retryable``), document copies
that share immutable values (``embedded.copies``), and, for tests only, the ``failCommand`` fail point
(``embedded.failpoints``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from typing import Any

from mongoeco.api import AsyncMongoClient
from mongoeco.wire import AsyncMongoEcoProxyServer
from mongoeco.wire.auth import WireAuthUser

from embedded import admin, copies, cursors, replies
from embedded.changestream import ChangeStreamBridge
from embedded.contexts import app_name
from embedded.defaults import HISTORY_SIZE, REPLICA_SET
from embedded.engine import EmbeddedEngine
from embedded.failpoints import FailPoints
from embedded.hub import EmbeddedHub
from embedded.replset import ReplicaSetPrimary
from embedded.retryable import Statements

log = logging.getLogger(__name__)


def _count_commands(executor: Any) -> None:
    """Count every command the server answers; serverStatus reports the total as ``wireCommands``
    (mongoeco's opcounters miss change-stream getMores) and, per client ``appName`` and command,
    ``wireCommandsByApp`` (what one application costs the server, as a benchmark reads it)."""
    execute = executor.execute_prepared
    total = 0
    by_app: dict[str, Counter[str]] = {}

    async def counted(context: Any) -> dict[str, Any]:
        nonlocal total
        total += 1
        by_app.setdefault(app_name(context) or "", Counter())[context.command_name] += 1
        result = await execute(context)
        if context.command_name == "serverStatus" and isinstance(result, dict):
            result["wireCommands"] = total
            result["wireCommandsByApp"] = {app: dict(names) for app, names in by_app.items()}
        return result

    executor.execute_prepared = counted


class EmbeddedMongo:
    """One embedded server; ``await start()``, then ``await close()``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, history_size: int = HISTORY_SIZE,
        users: tuple[WireAuthUser, ...] = (), replica_set: str = REPLICA_SET, test_commands: bool = False,
    ) -> None:
        copies.install()
        self.client = AsyncMongoClient(engine=EmbeddedEngine())
        # Swapped in before anything uses the client (its constructor takes no hub).
        self.client._change_hub = EmbeddedHub(max_retained_events=history_size)
        self.proxy = AsyncMongoEcoProxyServer(client=self.client, host=host, port=port, auth_users=users)
        executor = self.proxy._executor
        self.streams = ChangeStreamBridge(self.client)
        self.streams.install(executor)
        replies.install(executor)
        fail_points = FailPoints(enabled=test_commands)  # refuses configureFailPoint if not
        Statements(fail_points.after_retryable_write).install(executor, self.proxy._session_store)
        fail_points.install(executor, self.proxy)
        admin.install(executor, self.proxy._session_store, test_commands)
        cursors.install(executor)  # ids are ints for every wrapper inside it
        self.primary = ReplicaSetPrimary(replica_set, host, self.streams.cluster_time)
        self.primary.install(executor)  # every reply, the fail points' errors included, is stamped
        _count_commands(executor)

    async def start(self) -> str:
        """Start listening; returns the URI clients use."""
        await self.client._engine.connect()
        address = await self.proxy.start()
        host = "127.0.0.1" if address.host in ("0.0.0.0", "::", "") else address.host
        self.primary.host = f"{host}:{address.port}"  # the member's name, which drivers connect to
        return address.uri

    async def close(self) -> None:
        """Stop listening and release every cursor."""
        self.streams.close()
        await self.proxy.close()
        await self.client._engine.disconnect()


async def serve(
    host: str, port: int, history_size: int = HISTORY_SIZE, user: str | None = None, password: str | None = None,
    test_commands: bool = False,
) -> None:
    """Run the embedded server until SIGTERM or SIGINT; with ``user``, clients must authenticate; with
    ``test_commands``, ``configureFailPoint`` works (tests only)."""
    users = (WireAuthUser(user, password, roles=({"role": "root", "db": "admin"},)),) if user else ()
    server = EmbeddedMongo(host, port, history_size, users, test_commands=test_commands)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    uri = await server.start()
    log.info("embedded MongoDB (in-memory, data is lost on exit%s%s), primary of replica set %r, listening on %s",
             f", user {user!r} must authenticate" if user else "",
             ", TEST COMMANDS ON: fail points can be set" if test_commands else "", REPLICA_SET, uri)
    try:
        await stop.wait()
    finally:
        log.info("embedded MongoDB stopping")
        await server.close()
