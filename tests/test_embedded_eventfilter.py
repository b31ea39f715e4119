"""A change stream's cheaper transform gives each event exactly what mongoeco's own gives, and never builds
an event that its pipeline's leading ``$match`` refuses by kind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId
from mongoeco._change_streams.cursor import AsyncChangeStreamCursor
from mongoeco._change_streams.hub import ChangeStreamHub
from mongoeco._change_streams.models import ChangeStreamScope
from mongoeco._types.documents import ChangeEventSnapshot

from embedded import eventfilter
from watcher.stream import STREAMS

MESSAGE = {"_id": ObjectId(), "sender_type": "conversation", "source": "sms", "sender_id": 7,
           "created": datetime(2026, 12, 3, tzinfo=UTC), "metadata": {"a": [1, {"b": None}]}}
LOG = {"_id": ObjectId(), "conv_message_id": MESSAGE["_id"], "success": True, "account_id": 3, "provider": "x"}

PIPELINES: list[Any] = [
    *(spec.pipeline for spec in STREAMS),
    None,
    [],
    [{"$match": {"operationType": "update"}}],
    [{"$match": {"operationType": {"$in": ["insert", "delete"]}, "fullDocument.source": "sms"}}],
    [{"$match": {"operationType": {"$ne": "insert"}}}],
    [{"$match": {"$or": [{"operationType": "insert"}, {"operationType": "update"}]}}],
    [{"$addFields": {"operationType": "insert"}}, {"$match": {"operationType": "insert"}}],
    [{"$project": {"documentKey": 1, "fullDocument.success": 1}}],
    [{"$project": {"a": 1, "b": 0}}],  # does not compile: both must fail alike
    [{"$match": {"operationType": "insert"}}, {"$unset": "_id"}],
]


def events(collection: str) -> list[ChangeEventSnapshot]:
    key = {"_id": MESSAGE["_id"]}
    change = {"updatedFields": {"delivered": True}, "removedFields": ["_claim"], "truncatedArrays": []}
    return [
        ChangeEventSnapshot(1, "insert", "msgstatus", collection, key, full_document=MESSAGE),
        ChangeEventSnapshot(2, "insert", "msgstatus", collection, {"_id": LOG["_id"]}, full_document=LOG),
        ChangeEventSnapshot(3, "update", "msgstatus", collection, key, full_document=MESSAGE,
                            update_description=change),
        ChangeEventSnapshot(4, "update", "msgstatus", collection, key, update_description=change),
        ChangeEventSnapshot(5, "replace", "msgstatus", collection, key, full_document=MESSAGE),
        ChangeEventSnapshot(6, "delete", "msgstatus", collection, key),
        ChangeEventSnapshot(7, "insert", "msgstatus", "elsewhere", key, full_document=MESSAGE),
        ChangeEventSnapshot(8, "insert", "other", collection, key, full_document=MESSAGE),
        ChangeEventSnapshot(9, "drop", "msgstatus", collection, {}),
        ChangeEventSnapshot(10, "invalidate", "msgstatus", collection, {"_id": f"msgstatus.{collection}"}),
    ]


def cursor(pipeline: Any, full_document: str) -> Any:
    return AsyncChangeStreamCursor(ChangeStreamHub(), scope=ChangeStreamScope("msgstatus", "support_messages"),
                                   pipeline=pipeline, full_document=full_document)


def outcome(transform: Any, event: ChangeEventSnapshot) -> Any:
    try:
        return transform(event)
    except Exception as error:
        return type(error), str(error)


@pytest.mark.parametrize("full_document", ["default", "updateLookup"])
@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_a_stream_gets_from_each_event_exactly_what_mongoecos_own_transform_gives(pipeline, full_document):
    ours, theirs = cursor(pipeline, full_document), cursor(pipeline, full_document)
    eventfilter.install(ours)
    for event in events("support_messages"):
        assert outcome(ours._transform, event) == outcome(theirs._transform, event), event


class Counted:
    """An event that counts how often it is built into a document."""

    def __init__(self, event: ChangeEventSnapshot) -> None:
        self.event, self.built = event, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.event, name)

    def to_document(self) -> Any:
        self.built += 1
        return self.event.to_document()


def test_the_message_stream_turns_away_updates_of_its_collection_without_building_them():
    # Given the watcher's message stream, which wants inserts only
    stream = cursor(STREAMS[0].pipeline, "default")
    eventfilter.install(stream)
    # When a message's insert and its claim's and decision's updates reach it
    by_token = {event.token: event for event in events("support_messages")}
    insert, claim, decision = Counted(by_token[1]), Counted(by_token[3]), Counted(by_token[4])
    delivered = [stream._transform(e) for e in (insert, claim, decision)]
    # Then the insert is delivered, and neither update is built into a document
    assert delivered[0] is not None and delivered[1:] == [None, None]
    assert (insert.built, claim.built, decision.built) == (1, 0, 0)


@pytest.mark.parametrize(("pipeline", "kinds"), [
    (STREAMS[0].pipeline, {"insert"}),
    (STREAMS[1].pipeline, {"insert", "update", "replace"}),
    ([{"$match": {"operationType": {"$in": ["delete", {"$regex": "x"}]}}}], None),
    ([{"$match": {"operationType": {"$nin": ["insert"]}}}], None),
    ([{"$project": {"operationType": 1}}, {"$match": {"operationType": "insert"}}], None),
    ([{"$match": {"operationType": "insert"}, "$project": {"a": 1}}], None),
    ([], None),
    (None, None),
])
def test_only_a_leading_match_on_the_kind_itself_turns_events_away(pipeline, kinds):
    assert eventfilter.operation_types(pipeline) == (None if kinds is None else frozenset(kinds))
