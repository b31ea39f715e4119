"""Pure functions: serialization as Node writes it, the JWT, the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate

import jwt
from bson import ObjectId

from jobs.emit import node_json, retry_after, socket_token
from jobs.queueing import job_id
from jobs.retries import retry_delay


def test_node_json_writes_object_ids_as_hex_and_dates_as_utc_iso_with_milliseconds():
    oid = ObjectId("6b0463b05335ad598f9b3101")
    when = datetime(2026, 11, 23, 15, 4, 5, 678901, tzinfo=UTC)
    east = when.astimezone(timezone(timedelta(hours=3)))
    doc = {"_id": oid, "created": when, "nested": {"at": east, "ids": [oid]}, "naive": when.replace(tzinfo=None)}
    assert node_json(doc) == {
        "_id": "6b0463b05335ad598f9b3101",
        "created": "2026-11-23T15:04:05.678Z",
        "nested": {"at": "2026-11-23T15:04:05.678Z", "ids": ["6b0463b05335ad598f9b3101"]},
        "naive": "2026-11-23T15:04:05.678Z",
    }


def test_the_socket_token_carries_only_the_seeds_claims_and_lives_two_minutes():
    token = socket_token("conv-1", "acct-1", "k" * 32, now=1_000_000)
    claims = jwt.decode(token, "k" * 32, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"conversation_id": "conv-1", "account_id": "acct-1", "type": "team",
                      "iat": 1_000_000, "exp": 1_000_120}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_retries_back_off_exponentially_from_one_second_as_the_seed_did():
    assert [retry_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert retry_delay(20) == 300


def test_job_ids_use_only_characters_rq_allows():
    assert job_id("6b0463b05335ad598f9b3101") == "status-6b0463b05335ad598f9b3101"


def test_retry_after_reads_seconds_and_http_dates_and_caps_them():
    now = 1_700_000_000.0
    assert retry_after("7", now) == 7
    assert retry_after(" 0 ", now) == 0
    assert retry_after(formatdate(now + 42, usegmt=True), now) == 42
    assert retry_after(formatdate(now - 60, usegmt=True), now) == 0  # a date in the past: no wait
    assert retry_after("86400", now) == 300  # never longer than the longest backoff
    assert retry_after(None, now) is None and retry_after("soon", now) is None and retry_after("-3", now) is None
