"""The two change streams: what each watches, and which message an event is about."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo.errors import OperationFailure

from jobs import seenlogs
from jobs.messages import COMMUNICATIONS, MESSAGES, SOURCES

HISTORY_LOST = 286
FATAL_STREAM_ERRORS = {HISTORY_LOST, 280, 260}
"""ChangeStreamHistoryLost, ChangeStreamFatalError, InvalidResumeToken: start over from now."""

NO_CHANGE_STREAMS = {40573, 13, 303, 115}
"""Standalone mongod, no privilege, not supported: the deployment runs sweep-only."""


class BadEvent(ValueError):
    """A change event whose document does not name a message."""


def message_id_of_message(event: dict[str, Any]) -> str:
    return str(event["documentKey"]["_id"])


def message_id_of_communication(event: dict[str, Any]) -> str:
    value = (event.get("fullDocument") or {}).get("conv_message_id")
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, str) and ObjectId.is_valid(value):
        return value
    raise BadEvent(
        f"communication {event.get('documentKey', {}).get('_id')} has conv_message_id={value!r}, "
        "not an ObjectId or a 24-hex string: no message to check"
    )


@dataclass(frozen=True)
class StreamSpec:
    """A collection to watch, the server-side filter, and how an event names its message."""

    name: str
    collection: str
    pipeline: list[dict[str, Any]]
    message_id: Callable[[dict[str, Any]], str]
    only_with_log: bool = False
    """Enqueue only messages that already have a log: without one, the log's own insert event brings them."""
    full_document: str | None = None
    """``updateLookup`` where update events must carry the document as it is now."""
    names_logs: bool = False
    """Its events are logs: the watcher remembers their messages (``watcher.recent``)."""


STREAMS = (
    StreamSpec(
        name="messages",
        collection=MESSAGES,
        pipeline=[
            {"$match": {
                "operationType": "insert",
                "fullDocument.sender_type": "conversation",
                "fullDocument.source": {"$in": list(SOURCES)},
            }},
            {"$project": {"documentKey": 1}},
        ],
        message_id=message_id_of_message,
        # The usual message has no log yet: a job now would claim, look, release and leave. A log written
        # before it was seen by the other stream (``watcher.recent``); one written after has its own event.
        only_with_log=True,
    ),
    StreamSpec(
        name="communications",
        collection=COMMUNICATIONS,
        # A log changed after its insert (conv_message_id given late, success corrected) is an event too:
        # its message's job decides it on the log as it is now, or notes a change after the decision.
        pipeline=[
            {"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}},
            # What a decision reads of a log comes with its event (``jobs.seenlogs``).
            {"$project": {"documentKey": 1, **{f"fullDocument.{name}": 1 for name in seenlogs.FIELDS}}},
        ],
        message_id=message_id_of_communication,
        full_document="updateLookup",
        names_logs=True,
    ),
)


def is_history_lost(error: OperationFailure) -> bool:
    """The server cannot resume from our token: start from now and sweep to catch up."""
    return error.code in FATAL_STREAM_ERRORS or ("resume" in str(error).lower() and not error.code)


def has_no_change_streams(error: OperationFailure) -> bool:
    """This deployment offers no change streams (standalone, no privilege, not supported)."""
    text = str(error)
    return error.code in NO_CHANGE_STREAMS or ("$changeStream" in text and "nsupported" in text)
