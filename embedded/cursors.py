"""Cursor ids on the wire as MongoDB has them: 64-bit integers, both ways, for every cursor.

Drivers send cursor ids back as BSON int64, which mongoeco decodes as ``BsonInt64``
and its request validation then rejects; and mongoeco answers a cursor id that fits
in 32 bits as an int32, which the Node driver refuses ("BSON element "id" is
missing"). This module turns ids into ``int`` as a request arrives, before anyone
(mongoeco or ``embedded.changestream``) looks at it, and into int64 in every reply.
"""

from __future__ import annotations

from typing import Any

from mongoeco.core.bson_scalars import BsonInt64
from mongoeco.errors import OperationFailure
from mongoeco.wire.cursors import WireCursorStore
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

CURSOR_NOT_FOUND = 43
"""MongoDB's code for a getMore on a cursor the server does not have."""


def as_int(value: object) -> int | None:
    """An integer sent as int32, int64 (``BsonInt64``) or a whole double; None for anything else."""
    if isinstance(value, BsonInt64):
        return value.value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def cursor_not_found(cursor_id: int) -> OperationFailure:
    """CursorNotFound (its codeName is added with every error reply's, ``embedded.replies``)."""
    return OperationFailure(f"cursor id {cursor_id} not found", code=CURSOR_NOT_FOUND)


def install(executor: WireCommandExecutor) -> None:
    """Normalise cursor ids in the executor's requests and replies; install after every other wrapper."""
    build, execute = executor._build_request_context, executor.execute_prepared

    def build_context(body: dict[str, Any], **kwargs: Any) -> WireRequestContext:
        return build(_ids_in(body), **kwargs)

    async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
        return _ids_out(await execute(context))

    executor._build_request_context = build_context  # type: ignore[method-assign]
    executor.execute_prepared = execute_prepared  # type: ignore[method-assign]
    _refuse_unknown_cursors(executor._cursor_store)


def _ids_in(body: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(body), "")
    if name == "getMore" and (cursor_id := as_int(body["getMore"])) is not None:
        body["getMore"] = cursor_id
    elif name == "killCursors" and isinstance(cursors := body.get("cursors"), list):
        body["cursors"] = [value if (cursor_id := as_int(value)) is None else cursor_id for value in cursors]
    return body


def _ids_out(result: dict[str, Any]) -> dict[str, Any]:
    cursor = result.get("cursor")
    if isinstance(cursor, dict) and (cursor_id := as_int(cursor.get("id"))) is not None:
        cursor["id"] = BsonInt64(cursor_id)
    for key in ("cursorsKilled", "cursorsNotFound", "cursorsAlive", "cursorsUnknown"):
        if isinstance(ids := result.get(key), list):
            result[key] = [BsonInt64(i) if (i := as_int(value)) is not None else value for value in ids]
    return result


def _refuse_unknown_cursors(store: WireCursorStore) -> None:
    """A getMore on a cursor mongoeco's store does not have fails with CursorNotFound, as on MongoDB
    (mongoeco answers it with an empty, closed batch, so a client never learns its cursor was lost)."""
    get_more = store.get_more

    def checked(command_document: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        cursor_id = command_document.get("getMore")
        if isinstance(cursor_id, int) and cursor_id not in store._state:
            raise cursor_not_found(cursor_id)
        return get_more(command_document, **kwargs)

    store.get_more = checked  # type: ignore[method-assign]
