"""Statements with a ``txnNumber``: retried writes applied once, and transactions that a failed statement ends.

A driver talking to a replica set sends each retryable write (insert, update,
delete, findAndModify outside a transaction) with its session's ``lsid`` and a
``txnNumber``, and sends it again, unchanged, after a network error or an
election. MongoDB applies it once and answers the retry with the first reply;
so does this server, for the last LIMIT writes.

Inside a transaction, a statement that fails aborts the transaction, as on
MongoDB: later statements and the commit get NoSuchTransaction (251) with the
TransientTransactionError label, so that a driver runs the whole transaction again.
A failed commit aborts the transaction, and a transaction started on a session
aborts the one the session left open (after a commit that a fail point failed).
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mongoeco.errors import OperationFailure
from mongoeco.session import ClientSession
from mongoeco.wire._session_identity import wire_session_key
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext
from mongoeco.wire.sessions import WireSessionStore

from embedded.replies import NO_SUCH_TRANSACTION

WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
"""Commands a driver retries with the same ``txnNumber``."""

LIMIT = 10_000
"""Retryable writes whose replies are kept (MongoDB keeps them per session, for the session's lifetime)."""

type Key = tuple[str, int]


def _key(body: dict[str, Any]) -> Key | None:
    lsid, number = body.get("lsid"), body.get("txnNumber")
    if lsid is None or number is None:
        return None
    return wire_session_key(lsid), int(getattr(number, "value", number))


class Statements:
    """The replies of retryable writes, and the transactions a failed statement aborted."""

    def __init__(self, on_write: Callable[[WireRequestContext, bool], None] | None = None) -> None:
        """``on_write(context, applied)`` is called before and after each retryable write is applied (fail
        points hook in there)."""
        self._on_write = on_write or (lambda context, applied: None)
        self._done: OrderedDict[Key, dict[str, Any]] = OrderedDict()
        self._running: dict[Key, asyncio.Event] = {}
        self._aborted: OrderedDict[Key, None] = OrderedDict()

    def install(self, executor: WireCommandExecutor, store: WireSessionStore) -> None:
        execute, apply = executor.execute_prepared, store._apply_transaction_metadata

        def apply_transaction_metadata(session: ClientSession, body: dict[str, Any]) -> None:
            # A transaction started on a session ends the one it left open (its commit failed, say)
            if body.get("startTransaction") is True and session.transaction_active:
                session.abort_transaction()
            apply(session, body)

        def commit_transaction(body: dict[str, Any]) -> dict[str, Any]:
            # A commit that fails aborts, or the session stays pinned to the transaction's old snapshot
            session = store._require_session(body)
            if session.transaction_active:
                try:
                    session.commit_transaction()
                except Exception:
                    session.abort_transaction()
                    raise
            return {"ok": 1.0}

        async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
            body, key = context.raw_body, _key(context.raw_body)
            if key is None:
                return await execute(context)
            if body.get("autocommit") is False:
                return await self._in_transaction(execute, context, key)
            if context.command_name in WRITES:
                return await self._once(execute, context, key)
            return await execute(context)

        executor.execute_prepared = execute_prepared  # type: ignore[method-assign]
        store._apply_transaction_metadata = apply_transaction_metadata  # type: ignore[method-assign]
        store.commit_transaction = commit_transaction  # type: ignore[method-assign]

    async def _once(self, execute: Any, context: WireRequestContext, key: Key) -> dict[str, Any]:
        """The write's reply: its first one if it was applied before."""
        while (running := self._running.get(key)) is not None:
            await running.wait()  # the first try is still running: its outcome decides
        if key in self._done:
            return copy.deepcopy(self._done[key])
        self._running[key] = asyncio.Event()
        try:
            self._on_write(context, False)
            reply = await execute(context)
            if isinstance(reply, dict) and reply.get("ok") == 1:
                self._done[key] = copy.deepcopy(reply)
                while len(self._done) > LIMIT:
                    self._done.popitem(last=False)
                self._on_write(context, True)
            return reply
        finally:
            self._running.pop(key).set()

    async def _in_transaction(self, execute: Any, context: WireRequestContext, key: Key) -> dict[str, Any]:
        name = context.command_name
        if context.raw_body.get("startTransaction"):
            self._aborted.pop(key, None)
        elif key in self._aborted:
            raise OperationFailure(
                f"Transaction with {{ txnNumber: {key[1]} }} has been aborted.", code=NO_SUCH_TRANSACTION,
                error_labels=("TransientTransactionError",))
        ending = name in ("commitTransaction", "abortTransaction")
        try:
            reply = await execute(context)
        except Exception:
            if not ending:
                self._abort(context, key)
            raise
        if not ending and isinstance(reply, dict) and reply.get("writeErrors"):
            self._abort(context, key)
        return reply

    def _abort(self, context: WireRequestContext, key: Key) -> None:
        session = context.session
        if session is not None and session.transaction_active:
            session.abort_transaction()
        self._aborted[key] = None
        while len(self._aborted) > LIMIT:
            self._aborted.popitem(last=False)
