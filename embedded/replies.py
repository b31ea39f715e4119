"""Replies as MongoDB gives them where mongoeco's differ and a driver or Mongoose acts on the difference.

Errors carry MongoDB's ``code``, ``codeName`` and labels: Mongoose ignores
NamespaceExists (48) from its start-up ``create`` and NamespaceNotFound (26) from
``listIndexes``, ``withTransaction`` retries on the TransientTransactionError label,
a change stream resumes or gives up by code (43, 286). Index specs carry their
version ``v``, as MongoDB lists them.
"""

from __future__ import annotations

from typing import Any

from mongoeco.errors import OperationFailure
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

NAMESPACE_NOT_FOUND = 26
"""MongoDB's code for a command on a collection that does not exist."""

NAMESPACE_EXISTS = 48
"""MongoDB's code for creating a collection that exists."""

INDEX_VERSION = 2
"""The index format version MongoDB 3.4 and later report for every index."""

CODE_NAMES: dict[int, str] = {
    2: "BadValue",
    24: "LockTimeout",
    6: "HostUnreachable",
    7: "HostNotFound",
    26: "NamespaceNotFound",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    64: "WriteConcernFailed",
    89: "NetworkTimeout",
    100: "UnsatisfiableWriteConcern",
    91: "ShutdownInProgress",
    112: "WriteConflict",
    121: "DocumentValidationFailure",
    136: "CappedPositionLost",
    189: "PrimarySteppedDown",
    234: "RetryChangeStream",
    237: "CursorKilled",
    239: "SnapshotTooOld",
    246: "SnapshotUnavailable",
    251: "NoSuchTransaction",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    267: "PreparedTransactionInProgress",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11601: "Interrupted",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40324: "Location40324",
}
"""The name MongoDB gives each code this server answers with: the one place a reply's codeName comes from."""

TRANSIENT = frozenset({24, 112, 239, 246, 267})
"""Codes MongoDB labels TransientTransactionError (a driver's withTransaction runs the callback again)."""

NO_SUCH_TRANSACTION = 251
"""MongoDB's code for a statement or commit of a transaction that was aborted (or never began)."""

RETRYABLE = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
"""Codes MongoDB labels RetryableWriteError in a retryable write or a commit (an election, a shutdown, the
network): a driver sends the write again, once."""


def namespace_not_found(namespace: str) -> OperationFailure:
    return OperationFailure(f"ns does not exist: {namespace}", code=NAMESPACE_NOT_FOUND)


def namespace_exists(namespace: str) -> OperationFailure:
    return OperationFailure(f"Collection {namespace} already exists.", code=NAMESPACE_EXISTS)


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the ``codeName`` and labels MongoDB would send with this error document's code."""
    code = document.get("code")
    if isinstance(code, int) and code in CODE_NAMES:
        document.setdefault("codeName", CODE_NAMES[code])
        if code in TRANSIENT:
            labels = list(document.get("errorLabels") or [])
            if "TransientTransactionError" not in labels:
                document["errorLabels"] = [*labels, "TransientTransactionError"]
    return document


def install(executor: WireCommandExecutor) -> None:
    """Complete every error reply of the executor, and answer ``create`` and ``listIndexes`` as MongoDB does."""
    error_document, execute = executor.error_document, executor.execute_prepared
    client = executor._client

    def completed(error: Exception) -> dict[str, Any]:
        return complete(error_document(error))

    async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
        name = context.command_name
        if name in ("create", "listIndexes"):
            collection = context.command_document.get(name)
            if isinstance(collection, str):
                exists = collection in await client[context.db_name].list_collection_names()
                if name == "create" and exists:
                    raise namespace_exists(f"{context.db_name}.{collection}")
                if name == "listIndexes" and not exists:
                    raise namespace_not_found(f"{context.db_name}.{collection}")
        result = await execute(context)
        if name == "listIndexes":
            _index_specs(result)
        return result

    executor.error_document = completed  # type: ignore[method-assign,assignment]
    executor.execute_prepared = execute_prepared  # type: ignore[method-assign]


def _index_specs(result: dict[str, Any]) -> None:
    """Index specs as MongoDB 4.4 and later list them (Mongoose compares them with its schema's):
    with their version ``v``, without ``ns``, and with only the options that were set."""
    cursor = result.get("cursor")
    if isinstance(cursor, dict) and isinstance(batch := cursor.get("firstBatch"), list):
        cursor["firstBatch"] = [_index_spec(spec) if isinstance(spec, dict) else spec for spec in batch]


def _index_spec(spec: dict[str, Any]) -> dict[str, Any]:
    unset = {"ns"} | {key for key in _FLAGS if spec.get(key) is False}
    if spec.get("name") == "_id_":
        unset.add("unique")  # unique by nature, not by option
    return {"v": INDEX_VERSION, **{key: value for key, value in spec.items() if key not in unset}}


_FLAGS = ("unique", "sparse", "hidden", "background")
"""Index options MongoDB lists only when they were set to true."""
