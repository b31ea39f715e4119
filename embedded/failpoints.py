"""MongoDB's fail points, for tests: ``configureFailPoint`` as mongod takes it with ``--setParameter
enableTestCommands=1``, and only when the server was started with ``--enable-test-commands``.

``{configureFailPoint: "failCommand", mode: "alwaysOn" | "off" | {times: n} | {skip: n}, data: {failCommands:
[names], errorCode, errorLabels, closeConnection, blockConnection, blockTimeMS, writeConcernError, appName}}``:
the next matching commands (from a client whose ``appName`` matches, if given) wait ``blockTimeMS`` first
if ``blockConnection``, then have their connection closed without a reply, fail with the code and labels,
or run and carry the write concern error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mongoeco.errors import OperationFailure
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

from embedded.changestream import CURSOR_ID_BASE
from embedded.contexts import app_name, own_context
from embedded.replies import NO_SUCH_TRANSACTION, RETRYABLE, TRANSIENT

COMMAND = "configureFailPoint"

FAIL_COMMAND, GET_MORE, WRITE = "failCommand", "failGetMoreAfterCursorCheckout", "onPrimaryTransactionalWrite"

CHECKED_OUT = "$checkedOut"
"""Marks the data of a fail point that fires after a getMore's cursor is checked out."""
NAMES = (FAIL_COMMAND, GET_MORE, WRITE)

RESUMABLE_CHANGE_STREAM = frozenset({6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602,
                                     13388, 13435, 13436})
"""Codes MongoDB labels ResumableChangeStreamError on a change stream's getMore: the driver resumes."""

BAD_VALUE = 2
"""MongoDB's code for an argument it cannot take."""

COMMAND_NOT_FOUND = 59
"""MongoDB's code for a command it does not have (``configureFailPoint`` without test commands)."""


class DropConnection(BaseException):
    """Raised to close the client's connection without a reply (never an error document)."""


@dataclass
class Point:
    """One fail point's mode and data, and how often it fired since it was last set."""

    data: dict[str, Any] = field(default_factory=dict)
    times: int | None = None  # None: always on
    skip: int = 0
    on: bool = False
    fired: int = 0

    def fires(self) -> bool:
        """Whether it fires now (counting it)."""
        if not self.on:
            return False
        if self.skip:
            self.skip -= 1
            return False
        if self.times is not None:
            self.times -= 1
            self.on = self.times > 0
        self.fired += 1
        return True


class FailPoints:
    """The server's fail points: ``failCommand``, ``failGetMoreAfterCursorCheckout`` (a change stream's getMore
    fails with ``errorCode``) and ``onPrimaryTransactionalWrite`` (a retryable write is applied, then its
    connection closed before the reply, or it fails first with ``failBeforeCommitExceptionCode``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.points = {name: Point() for name in NAMES}

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """``configureFailPoint``: set a fail point's mode and data."""
        if not self.enabled:
            raise OperationFailure(f"no such command: '{COMMAND}' (test commands are off: start the server with "
                                   "`msgstatus mongo --enable-test-commands`, for tests only)", code=COMMAND_NOT_FOUND)
        name, mode, data = body.get(COMMAND), body.get("mode"), body.get("data") or {}
        if name not in self.points:
            raise OperationFailure(f"unknown fail point: {name!r} (this server has {', '.join(NAMES)})",
                                   code=BAD_VALUE)
        if not isinstance(data, dict) or not isinstance(data.get("failCommands", []), list):
            raise OperationFailure("fail point data must be a document, its failCommands a list", code=BAD_VALUE)
        point = self.points[name]
        fired = point.fired
        self.points[name] = point = Point(dict(data), on=mode != "off")
        if isinstance(mode, dict) and "times" in mode:
            point.times = _int(mode["times"])
            point.on = point.times > 0
        elif isinstance(mode, dict) and "skip" in mode:
            point.skip = _int(mode["skip"])
        elif mode not in ("alwaysOn", "off"):
            raise OperationFailure(f"fail point mode {mode!r}: use alwaysOn, off, {{times: n}} or {{skip: n}}",
                                   code=BAD_VALUE)
        return {"ok": 1.0, "count": fired}  # how often the fail point fired since it was last set

    def fires(self, context: WireRequestContext) -> dict[str, Any] | None:
        """The data of the fail point that fires for this command now (counting it), else None."""
        point = self.points[FAIL_COMMAND]
        if point.on and context.command_name in point.data.get("failCommands", []):
            app = point.data.get("appName")
            if (app is None or app_name(context) == app) and point.fires():
                return point.data
        point = self.points[GET_MORE]
        if context.command_name == "getMore" and _change_stream(context) and point.fires():
            return {**point.data, "closeConnection": bool(point.data.get("closeConnection")), CHECKED_OUT: True}
        return None

    def after_retryable_write(self, context: WireRequestContext, applied: bool) -> None:
        """Called by ``embedded.retryable`` before (``applied`` False) and after a retryable write is applied."""
        point = self.points[WRITE]
        code = point.data.get("failBeforeCommitExceptionCode")
        if not point.on or applied == (code is not None) or not point.fires():
            return
        if code is not None:
            raise OperationFailure("failed by the onPrimaryTransactionalWrite fail point", code=_int(code),
                                   error_labels=tuple(_labels(context, _int(code))))
        if point.data.get("closeConnection", True):
            raise DropConnection

    def install(self, executor: WireCommandExecutor, proxy: Any) -> None:
        """Take ``configureFailPoint`` and fail matching commands through ``executor``."""
        build, execute = executor._build_request_context, executor.execute_prepared

        def build_context(body: dict[str, Any], **kwargs: Any) -> WireRequestContext:
            if next(iter(body), "") != COMMAND:
                return build(body, **kwargs)
            return own_context(body, kwargs["connection"], executor._client)

        async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
            if context.command_name == COMMAND:
                return self.configure(context.command_document)
            data = self.fires(context)
            if data is None:
                return await execute(context)
            if data.get("blockConnection"):
                await asyncio.sleep(_int(data.get("blockTimeMS", 0)) / 1000)
            if data.get("closeConnection"):
                raise DropConnection
            if "errorCode" in data:
                code = _int(data["errorCode"])
                labels = (data["errorLabels"] if "errorLabels" in data
                          else _labels(context, code, checked_out=bool(data.get(CHECKED_OUT))))
                raise OperationFailure(f"Failing command {context.command_name} via 'failCommand' failpoint",
                                       code=code, error_labels=tuple(labels))
            reply = await execute(context)
            if "writeConcernError" in data and isinstance(reply, dict):
                reply["writeConcernError"] = dict(data["writeConcernError"])
                if data.get("errorLabels"):
                    reply["errorLabels"] = list(data["errorLabels"])
            return reply

        dispatch = proxy._dispatch_wire_request

        async def dispatch_wire_request(header: Any, payload: bytes, *, connection: Any) -> bytes | None:
            try:
                return await dispatch(header, payload, connection=connection)
            except DropConnection:
                raise ConnectionResetError("closed by the failCommand fail point") from None

        executor._build_request_context = build_context  # type: ignore[method-assign]
        executor.execute_prepared = execute_prepared  # type: ignore[method-assign]
        proxy._dispatch_wire_request = dispatch_wire_request


def _labels(context: WireRequestContext, code: int, checked_out: bool = False) -> list[str]:
    """The labels MongoDB adds to an error with this code in this command's context (unless the fail point
    names its own). A getMore is known to be a change stream's only once its cursor is checked out
    (``checked_out``): failCommand fails it before, without the resumable label."""
    body = context.raw_body
    in_transaction = body.get("autocommit") is False
    ending = context.command_name in ("commitTransaction", "abortTransaction")
    retryable_write = "txnNumber" in body and (ending or not in_transaction)
    labels = []
    if checked_out and code in RESUMABLE_CHANGE_STREAM:
        labels.append("ResumableChangeStreamError")
    if code in RETRYABLE and retryable_write:
        labels.append("RetryableWriteError")
    # A commit that fails for an election may have committed: only the commit is retried, not the transaction.
    transient = code in TRANSIENT or code == NO_SUCH_TRANSACTION or (not ending and code in RETRYABLE)
    if in_transaction and transient:
        labels.append("TransientTransactionError")
    return labels


def _change_stream(context: WireRequestContext) -> bool:
    """A getMore on one of the change stream bridge's cursors."""
    cursor = context.command_document.get("getMore")
    return isinstance(cursor, int) and cursor >= CURSOR_ID_BASE


def _int(value: Any) -> int:
    return int(getattr(value, "value", value))
