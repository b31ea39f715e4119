"""What a change stream's events and errors carry, as MongoDB sends them: wall time, and the labels that
tell a driver whether to resume."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import OperationFailure


@pytest.fixture
def fail_point(client) -> Iterator[Any]:
    """Set one of the server's fail points by name; it is turned off after the test."""
    names: list[str] = []

    def configure(name: str, mode: Any, **data: Any) -> None:
        names.append(name)
        client.admin.command({"configureFailPoint": name, "mode": mode, "data": data})

    yield configure
    for name in names:
        client.admin.command({"configureFailPoint": name, "mode": "off"})


def _get_more_error(client, db_name: str) -> OperationFailure:
    """The error of the first getMore on a new change stream cursor on ``db_name``.x, sent as a plain command."""
    db = client[db_name]
    db.create_collection("x", check_exists=False)
    opened = db.command("aggregate", "x", pipeline=[{"$changeStream": {}}], cursor={})
    with pytest.raises(OperationFailure) as failed:
        db.command("getMore", opened["cursor"]["id"], collection="x", maxTimeMS=100)
    return failed.value


def test_each_event_carries_the_wall_time_of_its_change(client, db_name):
    with client[db_name].x.watch(max_await_time_ms=1000) as stream:
        before = datetime.now(UTC) - timedelta(milliseconds=1)
        client[db_name].x.insert_one({"n": 1})
        after = datetime.now(UTC) + timedelta(milliseconds=1)
        event = stream.try_next()
    assert event is not None
    assert before <= event["wallTime"].replace(tzinfo=UTC) <= after


def test_a_get_more_failed_before_its_cursor_is_checked_out_has_no_resumable_label(client, fail_point, db_name):
    # failCommand fails a getMore before the server knows it is a change stream's: the driver must not resume
    fail_point("failCommand", {"times": 1}, failCommands=["getMore"], errorCode=6)
    failed = _get_more_error(client, db_name)
    assert failed.code == 6 and not failed.has_error_label("ResumableChangeStreamError")


def test_a_get_more_failed_after_its_cursor_is_checked_out_has_the_resumable_label(client, fail_point, db_name):
    # a driver resumes the stream by itself
    fail_point("failGetMoreAfterCursorCheckout", {"times": 1}, errorCode=6)
    failed = _get_more_error(client, db_name)
    assert failed.code == 6 and failed.has_error_label("ResumableChangeStreamError")


def test_a_stage_that_removes_the_resume_token_ends_the_stream_as_non_resumable(client, db_name):
    with client[db_name].x.watch([{"$project": {"_id": 0}}], max_await_time_ms=1000) as stream:
        client[db_name].x.insert_one({"n": 1})
        with pytest.raises(OperationFailure) as failed:
            stream.try_next()
    assert failed.value.code == 280 and failed.value.has_error_label("NonResumableChangeStreamError")
