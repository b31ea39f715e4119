"""Dropping collections under change streams: the events MongoDB gives, and none lost after."""

from __future__ import annotations

import pymongo
import pytest
from pymongo.errors import OperationFailure

from tests.conftest import start_mongo


def test_the_first_insert_after_dropping_a_collection_that_never_existed_reaches_a_stream():
    # Given a fresh server, and a collection dropped before it ever existed
    server = start_mongo()
    try:
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=20_000) as client:
            collection = client.fresh.never_existed
            collection.drop()
            # When a stream opens and two documents are inserted
            with collection.watch(max_await_time_ms=1000) as stream:
                collection.insert_many([{"n": 1}, {"n": 2}], ordered=True)
                seen = [stream.try_next() for _ in range(2)]
            # Then the stream sees both, the first too
            assert [event["fullDocument"]["n"] for event in seen if event] == [1, 2]
    finally:
        server.stop()


def test_a_dropped_collection_gives_drop_then_invalidate_and_only_start_after_passes_the_invalidate(
    client, db_name
):
    # Given a stream on a collection
    collection = client[db_name].watched
    collection.insert_one({"n": 0})
    with collection.watch(max_await_time_ms=1000) as stream:
        # When the collection is dropped
        collection.drop()
        events = []
        while stream.alive and len(events) < 3:
            event = stream.try_next()
            if event is not None:
                events.append(event)
    # Then the stream says drop, then invalidate, and ends
    assert [event["operationType"] for event in events] == ["drop", "invalidate"]
    assert events[0]["ns"] == {"db": db_name, "coll": "watched"}
    invalidate = events[1]["_id"]
    # and resuming after the invalidate is refused (as MongoDB does), while starting after it works
    with pytest.raises(OperationFailure) as refused:
        collection.watch(resume_after=invalidate).close()
    assert refused.value.code == 260
    with collection.watch(start_after=invalidate, max_await_time_ms=1000) as after:
        collection.insert_one({"n": 1})  # the collection, recreated
        event = after.try_next()
        assert event is not None and event["fullDocument"]["n"] == 1


def test_a_stream_opened_after_an_invalidate_resumes_from_its_position_with_resume_after(client, db_name):
    # Given a collection dropped under a stream, so that the newest event in the history is an invalidate
    collection = client[db_name].dropped_then_watched
    collection.insert_one({"n": 0})
    with collection.watch(max_await_time_ms=300) as stream:
        collection.drop()
        while stream.alive:
            stream.try_next()
    # When a new stream opens, sees nothing, and a driver resumes it from its position (its batch's token)
    with collection.watch(max_await_time_ms=100) as fresh:
        assert fresh.try_next() is None
        position = fresh.resume_token
    collection.insert_one({"n": 1})
    # Then the position is not taken for the invalidate: resumeAfter works and yields the next insert
    with collection.watch(resume_after=position, max_await_time_ms=1000) as resumed:
        event = resumed.try_next()
    assert event is not None and event["fullDocument"]["n"] == 1
