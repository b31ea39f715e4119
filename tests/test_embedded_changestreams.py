"""Change streams over the wire against the embedded MongoDB, through plain pymongo."""

from __future__ import annotations

import os
import threading
import time

import pymongo
import pytest
from bson import Timestamp
from pymongo.errors import OperationFailure

from tests.conftest import start_mongo
from tests.relay import Relay

pytestmark = pytest.mark.serial  # measures time or CPU: run alone (make test)


def resume_error(coll, token) -> OperationFailure:
    """The error of opening a stream on ``coll`` that resumes after ``token``."""
    with pytest.raises(OperationFailure) as error, coll.watch(resume_after=token) as stream:
        stream.try_next()
    return error.value


def drain(stream, until: int, timeout: float = 10.0) -> list[dict]:
    """Read events until ``until`` have arrived or ``timeout`` passes."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(events) < until and time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            events.append(event)
    return events


def test_fifty_inserts_from_one_client_arrive_in_order_on_another_clients_stream(client, other_client, db_name):
    with client[db_name].messages.watch(max_await_time_ms=200) as stream:
        for i in range(50):
            other_client[db_name].messages.insert_one({"i": i})
        events = drain(stream, 50)
    assert [e["fullDocument"]["i"] for e in events] == list(range(50))
    assert all(e["operationType"] == "insert" for e in events)
    assert all(e["ns"] == {"db": db_name, "coll": "messages"} for e in events)


def test_resume_after_a_token_gives_exactly_the_later_events(client, other_client, db_name):
    coll = other_client[db_name].messages
    with client[db_name].messages.watch(max_await_time_ms=200) as stream:
        coll.insert_many([{"i": i} for i in range(5)])
        events = drain(stream, 5)
    coll.insert_many([{"i": i} for i in range(5, 8)])
    with client[db_name].messages.watch(resume_after=events[2]["_id"], max_await_time_ms=200) as stream:
        resumed = drain(stream, 5, timeout=2)
    assert [e["fullDocument"]["i"] for e in resumed] == [3, 4, 5, 6, 7]


def test_start_after_and_start_at_operation_time_resume_where_asked(client, other_client, db_name):
    coll = other_client[db_name].messages
    with client[db_name].messages.watch(max_await_time_ms=200) as stream:
        coll.insert_many([{"i": i} for i in range(4)])
        events = drain(stream, 4)
    assert isinstance(events[1]["clusterTime"], Timestamp)
    with client[db_name].messages.watch(start_after=events[1]["_id"], max_await_time_ms=200) as stream:
        assert [e["fullDocument"]["i"] for e in drain(stream, 2)] == [2, 3]
    at = events[1]["clusterTime"]
    with client[db_name].messages.watch(start_at_operation_time=at, max_await_time_ms=200) as stream:
        assert [e["fullDocument"]["i"] for e in drain(stream, 3)] == [1, 2, 3]


def test_match_and_project_after_the_stage_filter_and_shape_events(client, other_client, db_name):
    pipeline = [
        {"$match": {"operationType": "insert", "fullDocument.source": {"$in": ["sms", "email"]}}},
        {"$project": {"fullDocument.source": 1, "operationType": 1}},
    ]
    with client[db_name].messages.watch(pipeline, max_await_time_ms=200) as stream:
        coll = other_client[db_name].messages
        coll.insert_many([{"source": "chat"}, {"source": "sms", "body": "x"}, {"source": "email"}])
        events = drain(stream, 2)
        assert stream.try_next() is None
    assert [e["fullDocument"] for e in events] == [{"source": "sms"}, {"source": "email"}]
    assert "body" not in events[0]["fullDocument"]


def test_full_document_update_lookup_carries_the_updated_document(client, other_client, db_name):
    coll = other_client[db_name].messages
    _id = coll.insert_one({"n": 1, "keep": "yes"}).inserted_id
    with client[db_name].messages.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
        coll.update_one({"_id": _id}, {"$set": {"n": 2}})
        (event,) = drain(stream, 1)
    assert event["operationType"] == "update"
    assert event["fullDocument"] == {"_id": _id, "n": 2, "keep": "yes"}
    with client[db_name].messages.watch(max_await_time_ms=200) as stream:
        coll.update_one({"_id": _id}, {"$set": {"n": 3}})
        (default,) = drain(stream, 1)
    assert default["operationType"] == "update" and "fullDocument" not in default


def test_database_watch_sees_every_collection_of_that_database_only(client, other_client, db_name):
    with client[db_name].watch(max_await_time_ms=200) as stream:
        other_client[db_name + "_other"].x.insert_one({"elsewhere": 1})
        other_client[db_name].a.insert_one({"a": 1})
        other_client[db_name].b.insert_one({"b": 1})
        events = drain(stream, 2)
        assert stream.try_next() is None
    assert [e["ns"]["coll"] for e in events] == ["a", "b"]


def test_an_empty_batch_still_advances_the_post_batch_resume_token(client, other_client, db_name):
    with client[db_name].messages.watch(max_await_time_ms=100) as stream:
        before = stream.resume_token
        other_client[db_name].unrelated.insert_one({"x": 1})
        assert stream.try_next() is None
        after = stream.resume_token
    assert before is not None and after is not None and after != before


def test_get_more_waits_for_max_await_time_then_returns_empty(client, db_name):
    with client[db_name].messages.watch(max_await_time_ms=300) as stream:
        started = time.monotonic()
        assert stream.try_next() is None
        waited = time.monotonic() - started
    assert 0.25 <= waited < 2.0


def test_a_waiting_stream_wakes_as_soon_as_an_event_arrives(client, other_client, db_name):
    with client[db_name].messages.watch(max_await_time_ms=5000) as stream:
        stream.try_next()  # first getMore establishes the cursor
        threading.Timer(0.2, lambda: other_client[db_name].messages.insert_one({"x": 1})).start()
        started = time.monotonic()
        event = stream.try_next()
        elapsed = time.monotonic() - started
    assert event is not None and event["fullDocument"]["x"] == 1
    assert elapsed < 1.5


def test_an_unknown_token_gets_change_stream_history_lost(client, db_name):
    assert resume_error(client[db_name].messages, {"_data": "not-a-token"}).code == 286
    assert resume_error(client[db_name].messages, {"_data": "f" * 32}).code == 286


def test_a_token_from_before_a_restart_gets_change_stream_history_lost(db_name):
    server = start_mongo()
    try:
        with pymongo.MongoClient(server.url) as c, c[db_name].m.watch(max_await_time_ms=100) as stream:
            c[db_name].m.insert_one({"x": 1})
            (event,) = drain(stream, 1)
    finally:
        server.stop()
    restarted = start_mongo(port=server.port)
    try:
        with pymongo.MongoClient(restarted.url) as c:
            c[db_name].m.insert_one({"x": 2})  # the new process has an event 1 too
            error = resume_error(c[db_name].m, event["_id"])
    finally:
        restarted.stop()
    assert error.code == 286


def test_a_token_older_than_the_retained_history_gets_change_stream_history_lost(db_name):
    server = start_mongo("--history", "5")
    try:
        with pymongo.MongoClient(server.url) as c:
            with c[db_name].m.watch(max_await_time_ms=100) as stream:
                c[db_name].m.insert_one({"first": 1})
                (event,) = drain(stream, 1)
            c[db_name].m.insert_many([{"i": i} for i in range(10)])
            error = resume_error(c[db_name].m, event["_id"])
    finally:
        server.stop()
    assert error.code == 286


def test_pymongo_resumes_by_itself_after_a_network_error(mongo_server, other_client, db_name):
    relay = Relay(mongo_server.port)
    url = f"mongodb://127.0.0.1:{relay.port}/?directConnection=true&serverSelectionTimeoutMS=5000"
    try:
        with pymongo.MongoClient(url) as c, c[db_name].m.watch(max_await_time_ms=200) as stream:
            other_client[db_name].m.insert_one({"i": 0})
            first = drain(stream, 1)
            relay.cut()
            other_client[db_name].m.insert_many([{"i": 1}, {"i": 2}])
            rest = drain(stream, 2)
    finally:
        relay.close()
    assert [e["fullDocument"]["i"] for e in first + rest] == [0, 1, 2]


def test_pymongo_resumes_when_the_server_forgot_the_cursor(client, other_client, db_name):
    with client[db_name].m.watch(max_await_time_ms=200) as stream:
        other_client[db_name].m.insert_one({"i": 0})
        first = drain(stream, 1)
        cursor_id = stream._cursor.cursor_id
        other_client[db_name].command("killCursors", "m", cursors=[cursor_id])
        other_client[db_name].m.insert_one({"i": 1})
        rest = drain(stream, 1)
    assert [e["fullDocument"]["i"] for e in first + rest] == [0, 1]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_stream_costs_the_server_under_five_percent_of_a_core(client, mongo_server, db_name):
    with client[db_name].m.watch(max_await_time_ms=1000) as stream:
        stream.try_next()
        cpu_before, started = _cpu_seconds(mongo_server.pid), time.monotonic()
        while time.monotonic() - started < 3.0:
            assert stream.try_next() is None
        share = (_cpu_seconds(mongo_server.pid) - cpu_before) / (time.monotonic() - started)
    assert share < 0.05, f"idle stream used {share:.1%} of a core"


@pytest.mark.parametrize("drop", ["database", "collection"])
def test_the_first_insert_after_a_drop_reaches_a_new_stream(client, other_client, db_name, drop):
    # mongoeco numbers a drop's events outside its commit sequence; without the
    # embedded hub the next insert was taken for a duplicate and never delivered.
    with client[db_name].m.watch(max_await_time_ms=100) as stream:
        other_client[db_name].m.insert_one({"before": 1})
        drain(stream, 1)
    if drop == "database":
        other_client.drop_database(db_name)
    else:
        other_client[db_name].drop_collection("m")
    with client[db_name].m.watch(max_await_time_ms=200) as stream:
        stream.try_next()
        other_client[db_name].m.insert_one({"after": drop})
        events = drain(stream, 1, timeout=3)
    assert [e["fullDocument"]["after"] for e in events] == [drop]
