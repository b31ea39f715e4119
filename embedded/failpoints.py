"""MongoDB's ``failCommand`` fail point, for tests: ``configureFailPoint`` as mongod takes it with
``--setParameter enableTestCommands=1``, and only when the server was started with ``--enable-test-commands``.

``{configureFailPoint: "failCommand", mode: "alwaysOn" | "off" | {times: n} | {skip: n}, data: {failCommands:
[names], errorCode, errorLabels, closeConnection, blockConnection, blockTimeMS, writeConcernError, appName}}``:
the next matching commands (from a client whose ``appName`` matches, if given) wait ``blockTimeMS`` first
if ``blockConnection``, then have their connection closed without a reply, fail with the code and labels,
or run and carry the write concern error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mongoeco.core.expression_context import ExpressionExecutionContext
from mongoeco.errors import OperationFailure
from mongoeco.wire.capabilities import resolve_wire_command_capability
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

from embedded.replies import RETRYABLE, TRANSIENT

COMMAND = "configureFailPoint"

BAD_VALUE = 2
"""MongoDB's code for an argument it cannot take."""

COMMAND_NOT_FOUND = 59
"""MongoDB's code for a command it does not have (``configureFailPoint`` without test commands)."""


class DropConnection(BaseException):
    """Raised to close the client's connection without a reply (never an error document)."""


class FailPoints:
    """The server's one ``failCommand`` fail point."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.data: dict[str, Any] = {}
        self.times: int | None = None  # None: always on
        self.skip = 0
        self.on = False
        self.fired = 0

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """``configureFailPoint``: set the mode and data of ``failCommand``."""
        if not self.enabled:
            raise OperationFailure(f"no such command: '{COMMAND}' (test commands are off: start the server with "
                                   "`msgstatus mongo --enable-test-commands`, for tests only)", code=COMMAND_NOT_FOUND)
        if body.get(COMMAND) != "failCommand":
            raise OperationFailure(f"unknown fail point: {body.get(COMMAND)!r} (only failCommand)", code=BAD_VALUE)
        mode, data = body.get("mode"), body.get("data") or {}
        if not isinstance(data, dict) or not isinstance(data.get("failCommands", []), list):
            raise OperationFailure("failCommand data must name failCommands, a list", code=BAD_VALUE)
        fired, self.fired = self.fired, 0
        self.data, self.times, self.skip, self.on = dict(data), None, 0, True
        if mode == "off":
            self.on = False
        elif isinstance(mode, dict) and "times" in mode:
            self.times = _int(mode["times"])
        elif isinstance(mode, dict) and "skip" in mode:
            self.skip = _int(mode["skip"])
        elif mode != "alwaysOn":
            raise OperationFailure(f"fail point mode {mode!r}: use alwaysOn, off, {{times: n}} or {{skip: n}}",
                                   code=BAD_VALUE)
        return {"ok": 1.0, "count": fired}  # how often the fail point fired since it was last set

    def fires(self, context: WireRequestContext) -> dict[str, Any] | None:
        """The fail point's data if it fires for this command now (counting it), else None."""
        if not self.on or context.command_name not in self.data.get("failCommands", []):
            return None
        app = self.data.get("appName")
        if app is not None and _app_name(context) != app:
            return None
        if self.skip:
            self.skip -= 1
            return None
        if self.times is not None:
            if self.times <= 0:
                self.on = False
                return None
            self.times -= 1
            self.on = self.times > 0
        self.fired += 1
        return self.data

    def install(self, executor: WireCommandExecutor, proxy: Any) -> None:
        """Take ``configureFailPoint`` and fail matching commands through ``executor``."""
        build, execute = executor._build_request_context, executor.execute_prepared

        def build_context(body: dict[str, Any], **kwargs: Any) -> WireRequestContext:
            if next(iter(body), "") != COMMAND:
                return build(body, **kwargs)
            return WireRequestContext(
                db_name=body.get("$db", "admin"), command_name=COMMAND,
                command_document={k: v for k, v in body.items() if not k.startswith("$") and k != "lsid"},
                raw_body=body, capability=resolve_wire_command_capability(COMMAND),
                connection=kwargs["connection"],
                execution_context=ExpressionExecutionContext(now=executor._client._resolve_now()),
            )

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
                labels = data["errorLabels"] if "errorLabels" in data else _labels(context, code)
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


def _labels(context: WireRequestContext, code: int) -> list[str]:
    """The labels MongoDB adds to an error with this code in this command's context (unless the fail point
    names its own)."""
    body = context.raw_body
    in_transaction = body.get("autocommit") is False
    ending = context.command_name in ("commitTransaction", "abortTransaction")
    retryable_write = "txnNumber" in body and (ending or not in_transaction)
    labels = []
    if code in RETRYABLE and retryable_write:
        labels.append("RetryableWriteError")
    if in_transaction and not ending and (code in RETRYABLE or code in TRANSIENT):
        labels.append("TransientTransactionError")
    return labels


def _int(value: Any) -> int:
    return int(getattr(value, "value", value))


def _app_name(context: WireRequestContext) -> str | None:
    metadata = context.connection.client_metadata or {}
    application = metadata.get("application")
    return application.get("name") if isinstance(application, dict) else None
