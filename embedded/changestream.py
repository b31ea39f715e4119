"""Change streams over the wire for mongoeco's proxy server.

mongoeco's wire server rejects an ``aggregate`` that starts with
``$changeStream``, although its in-process ``watch()`` sees every write made
over the wire. This bridge answers that aggregate with a tailable cursor fed by
an in-process change stream, and answers ``getMore`` / ``killCursors`` for the
cursors it opened, before mongoeco's own request validation sees them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mongoeco.api import AsyncMongoClient
from mongoeco.errors import OperationFailure
from mongoeco.types import Timestamp
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

from embedded import eventfilter
from embedded.contexts import own_context
from embedded.cursors import as_int, cursor_not_found
from embedded.hub import EmbeddedHub
from embedded.tokens import TokenCodec, history_lost

CURSOR_ID_BASE = 1 << 40
"""Cursor ids from here up are change streams; mongoeco's own count from 1."""

DEFAULT_AWAIT_MS = 1000
"""How long a getMore waits for an event when the client sets no maxTimeMS."""

STAGES = frozenset({"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith",
                    "$redact"})
"""The stages MongoDB allows after ``$changeStream``."""

UNRECOGNIZED_STAGE = 40324
"""MongoDB's code for a pipeline stage it does not know."""

CHANGE_STREAM_FATAL = 280
"""MongoDB's code for an event whose resume token a stage removed."""

INVALID_RESUME_TOKEN = 260
"""MongoDB's code for a token a stream cannot resume after (an invalidate's, with resumeAfter)."""

IDLE_CURSOR_TIMEOUT = 600.0
"""Seconds after which a cursor nobody asks for is closed (MongoDB's default)."""


@dataclass
class _Stream:
    cursor: Any
    namespace: str
    batch_size: int | None
    last_used: float = field(default_factory=time.monotonic)


class ChangeStreamBridge:
    """Serves ``$changeStream`` aggregates, their getMores and killCursors."""

    def __init__(self, client: AsyncMongoClient, codec: TokenCodec | None = None) -> None:
        self._client = client
        if not isinstance(client._change_hub, EmbeddedHub):
            raise TypeError("change streams over the wire need the client's hub to be an EmbeddedHub")
        self._hub = client._change_hub
        self._codec = codec or TokenCodec()
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(CURSOR_ID_BASE)
        # mongoeco records events only while someone watches; a permanent
        # watcher keeps the history complete so that any token can resume.
        self._hub.register_watcher()

    def __len__(self) -> int:
        return len(self._streams)

    def cluster_time(self) -> Timestamp:
        """The cluster time now: that of the newest change event (its ``startAtOperationTime`` resumes after it)."""
        with self._hub._condition:
            return self._codec.timestamp(int(self._hub._next_token) - 1)

    def install(self, executor: WireCommandExecutor) -> None:
        """Route the executor's change-stream traffic through this bridge."""
        build, execute = executor._build_request_context, executor.execute_prepared
        auth = executor._auth

        def build_context(body: dict[str, Any], **kwargs: Any) -> WireRequestContext:
            return self._own_context(body, kwargs["connection"]) or build(body, **kwargs)

        async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
            name, command = context.command_name, context.command_document
            if self._own_context(context.raw_body, context.connection) is not None:
                # Our commands skip mongoeco's handlers, so check authentication here.
                auth.require_authenticated(context.connection, name)
            if name == "aggregate" and self._is_change_stream(command):
                return await self._open(context.db_name, command)
            if name == "getMore" and self._owns(command.get("getMore")):
                return await self._get_more(context.db_name, command)
            if name == "killCursors" and self._owns_all(command.get("cursors")):
                return self._kill(command["cursors"])
            return await execute(context)

        executor._build_request_context = build_context  # type: ignore[method-assign]
        executor.execute_prepared = execute_prepared  # type: ignore[method-assign]

    def close(self) -> None:
        """Close every open stream and stop keeping history."""
        for stream in self._streams.values():
            stream.cursor.close()
        self._streams.clear()
        self._hub.unregister_watcher()

    # -- request routing --------------------------------------------------

    @staticmethod
    def _owns(cursor_id: object) -> bool:
        value = as_int(cursor_id)
        return value is not None and value >= CURSOR_ID_BASE

    def _owns_all(self, cursor_ids: object) -> bool:
        return isinstance(cursor_ids, list) and bool(cursor_ids) and all(map(self._owns, cursor_ids))

    @staticmethod
    def _is_change_stream(command: dict[str, Any]) -> bool:
        pipeline = command.get("pipeline")
        return (
            isinstance(pipeline, list)
            and bool(pipeline)
            and isinstance(pipeline[0], dict)
            and "$changeStream" in pipeline[0]
        )

    def _own_context(self, body: dict[str, Any], connection: Any) -> WireRequestContext | None:
        """A context for our commands, which mongoeco's validation would reject."""
        name = next(iter(body), "")
        ours = (
            (name == "aggregate" and self._is_change_stream(body))
            or (name == "getMore" and self._owns(body["getMore"]))
            or (name == "killCursors" and self._owns_all(body.get("cursors")))
        )
        if not ours:
            return None
        return own_context(body, connection, self._client)

    # -- commands -----------------------------------------------------------

    async def _open(self, db_name: str, command: dict[str, Any]) -> dict[str, Any]:
        self._reap_idle()
        pipeline = command["pipeline"]
        spec = pipeline[0]["$changeStream"] or {}
        target: Any = self._client
        if command["aggregate"] != 1:
            target = self._client[db_name][command["aggregate"]]
        elif not spec.get("allChangesForCluster"):
            target = self._client[db_name]
        for stage in pipeline[1:]:
            if isinstance(stage, dict) and any(name not in STAGES for name in stage):
                raise OperationFailure(f"Unrecognized pipeline stage name: {next(iter(stage))!r} (a change stream "
                                       f"takes {', '.join(sorted(STAGES))})", code=UNRECOGNIZED_STAGE)
        cursor = await target.watch(
            pipeline[1:] or None,
            full_document=spec.get("fullDocument", "default"),
            **self._start_point(spec),
        )
        eventfilter.install(cursor)
        cursor_id = next(self._ids)
        namespace = f"{db_name}.{command['aggregate'] if command['aggregate'] != 1 else '$cmd.aggregate'}"
        batch_size = as_int((command.get("cursor") or {}).get("batchSize"))
        self._streams[cursor_id] = _Stream(cursor, namespace, batch_size)
        return self._reply(cursor_id, "firstBatch", [], cursor._offset)

    def _start_point(self, spec: dict[str, Any]) -> dict[str, Any]:
        options = ("resumeAfter", "startAfter", "startAtOperationTime")
        if sum(option in spec for option in options) > 1:
            raise OperationFailure("only one of resumeAfter, startAfter, startAtOperationTime", code=40674)
        if "resumeAfter" in spec or "startAfter" in spec:
            key = "resumeAfter" if "resumeAfter" in spec else "startAfter"
            event = self._codec.event(spec[key])
            self._ensure_resumable(event)
            if (key == "resumeAfter" and not self._codec.high_water(spec[key])
                    and self._operation_type(event) == "invalidate"):
                raise OperationFailure("Attempting to resume a change stream using 'resumeAfter' is not allowed "
                                       "from an invalidate notification: use startAfter", code=INVALID_RESUME_TOKEN)
            return {"resume_after" if key == "resumeAfter" else "start_after": {"_data": str(event)}}
        if "startAtOperationTime" in spec:
            first = self._codec.event_at(spec["startAtOperationTime"])
            return {} if first is None else {"start_at_operation_time": first}
        return {}

    def _ensure_resumable(self, event: int) -> None:
        """ChangeStreamHistoryLost unless the events after ``event`` are all still kept."""
        with self._hub._condition:
            newest = int(self._hub._next_token) - 1
        if event > newest:
            raise history_lost("the resume token is not one this server issued")
        try:
            self._hub.offset_after_token(event)
        except OperationFailure as error:
            raise history_lost(str(error)) from error

    def _operation_type(self, event: int) -> str | None:
        """The kind of event number ``event`` (None if it is not kept)."""
        with self._hub._condition:
            return next((e.operation_type for e in self._hub._events if int(e.token) == event), None)

    async def _get_more(self, db_name: str, command: dict[str, Any]) -> dict[str, Any]:
        cursor_id = as_int(command["getMore"]) or 0
        stream = self._streams.get(cursor_id)
        if stream is None:
            raise cursor_not_found(cursor_id)
        stream.last_used = time.monotonic()
        wait_ms = as_int(command.get("maxTimeMS"))
        limit = as_int(command.get("batchSize")) or stream.batch_size or 1_000
        batch = await self._collect(stream.cursor, DEFAULT_AWAIT_MS if wait_ms is None else wait_ms, limit)
        stream.last_used = time.monotonic()
        if not stream.cursor.alive:  # an invalidate event closed it
            self._streams.pop(cursor_id, None)
            cursor_id = 0
        return self._reply(cursor_id, "nextBatch", batch, stream.cursor._offset)

    async def _collect(self, cursor: Any, wait_ms: int, limit: int) -> list[dict[str, Any]]:
        """Wait up to ``wait_ms`` for a first event, then take what is already there."""
        batch: list[dict[str, Any]] = []
        try:
            cursor._max_await_time_ms = wait_ms
            while len(batch) < limit and cursor.alive:
                event = await cursor.try_next()
                if event is None:
                    break
                batch.append(self._to_wire(event))
                cursor._max_await_time_ms = 0
        except OperationFailure as error:
            if not cursor.alive:  # an invalidate that the stream's $match filtered out closed it
                return batch
            if "no longer available" in str(error):
                raise history_lost("the server's change history moved past this cursor") from error
            raise
        return batch

    def _kill(self, cursor_ids: list[Any]) -> dict[str, Any]:
        killed: list[int] = []
        unknown: list[int] = []
        for raw in cursor_ids:
            cursor_id = as_int(raw) or 0
            stream = self._streams.pop(cursor_id, None)
            (killed if stream else unknown).append(cursor_id)
            if stream:
                stream.cursor.close()
        return {"cursorsKilled": killed, "cursorsNotFound": unknown, "cursorsAlive": [],
                "cursorsUnknown": [], "ok": 1.0}

    # -- documents -------------------------------------------------------------

    def _to_wire(self, event: dict[str, Any]) -> dict[str, Any]:
        if "_id" not in event:  # a stage removed the resume token: MongoDB ends the stream
            raise OperationFailure("Encountered an event whose _id field, which contains the resume token, was "
                                   "modified by the pipeline", code=CHANGE_STREAM_FATAL,
                                   error_labels=("NonResumableChangeStreamError",))
        token = event.get("_id")
        if isinstance(token, dict) and "_data" in token:
            from mongoeco._change_streams.cursor import parse_resume_token

            number = parse_resume_token(token)
            event["_id"] = self._codec.token(number)
            event["wallTime"] = self._hub.wall_time(number) or datetime.now(UTC)
        if isinstance(event.get("clusterTime"), int):
            event["clusterTime"] = self._codec.timestamp(event["clusterTime"])
        return event

    def _reply(self, cursor_id: int, key: str, batch: list[dict[str, Any]], offset: int) -> dict[str, Any]:
        stream = self._streams.get(cursor_id)
        cursor = {
            "id": cursor_id,
            "ns": stream.namespace if stream else "",
            key: batch,
            "postBatchResumeToken": self._codec.token(self._event_before(offset), high_water=True),
        }
        return {"cursor": cursor, "ok": 1.0}

    def _event_before(self, offset: int) -> int:
        """The number of the last event before hub position ``offset``."""
        hub = self._hub
        with hub._condition:
            position = offset - hub._base_offset
            if position >= len(hub._events):
                return int(hub._next_token) - 1
            if position > 0:
                return int(hub._events[position - 1].token)
            return int(hub._events[0].token) - 1

    def _reap_idle(self) -> None:
        deadline = time.monotonic() - IDLE_CURSOR_TIMEOUT
        for cursor_id, stream in list(self._streams.items()):
            if stream.last_used < deadline:
                stream.cursor.close()
                del self._streams[cursor_id]
