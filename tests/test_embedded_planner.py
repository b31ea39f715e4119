"""$in, null and $exists: false answered from single-field indexes give the same documents as a scan."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.serial  # measures time or CPU: run alone (make test)

DOCS = [
    {"k": 1, "f": "a"}, {"k": 2, "f": "b"}, {"k": 3, "f": None}, {"k": 4}, {"k": 5, "f": ["a", "c"]},
    {"k": 6, "f": {"x": 1}}, {"k": 7, "f": 1}, {"k": 8, "f": 1.0}, {"k": 9, "f": []}, {"k": 10, "f": "A"},
]

QUERIES = [
    {"f": {"$exists": False}},
    {"f": None},
    {"f": {"$in": ["a", "c"]}},
    {"f": {"$in": [1, "b"]}},
    {"f": {"$in": [None, "b"]}},
    {"f": {"$in": [{"x": 1}]}},
    {"f": {"$exists": False}, "k": {"$gt": 3}},
    {"$or": [{"f": {"$exists": False}}, {"f": "b"}]},
]


def keys(coll, query) -> list[int]:
    return sorted(doc["k"] for doc in coll.find(query))


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_an_indexed_query_finds_exactly_what_a_scan_finds(client, db_name, query):
    scanned, indexed, sparse = client[db_name].scanned, client[db_name].indexed, client[db_name].sparse
    for coll in (scanned, indexed, sparse):
        coll.insert_many([dict(d) for d in DOCS])
    indexed.create_index("f")
    sparse.create_index("f", sparse=True)
    assert keys(indexed, query) == keys(scanned, query)
    assert keys(sparse, query) == keys(scanned, query)


def test_exists_false_over_an_index_does_not_scan_a_large_collection(client, db_name):
    coll = client[db_name].messages
    coll.insert_many([{"delivered": True, "i": i} for i in range(30_000)])
    coll.insert_many([{"i": -i} for i in range(1, 6)])
    started = time.perf_counter()
    assert coll.count_documents({"delivered": {"$exists": False}}) == 5
    scan = time.perf_counter() - started
    coll.create_index("delivered")
    started = time.perf_counter()
    assert coll.count_documents({"delivered": {"$exists": False}}) == 5
    indexed = time.perf_counter() - started
    assert indexed < scan / 5, f"indexed {indexed * 1000:.1f} ms vs scan {scan * 1000:.1f} ms"


RANGE_DOCS = [
    {"k": 1, "t": 5}, {"k": 2, "t": 7.5}, {"k": 3, "t": "9"}, {"k": 4, "t": [1, 20]}, {"k": 5},
    {"k": 6, "t": None}, {"k": 7, "t": datetime(2026, 1, 1, tzinfo=UTC)}, {"k": 8, "t": datetime(2027, 1, 1)},
    {"k": 9, "h": {"kind": "retry"}}, {"k": 10, "t": 8, "h": None}, {"k": 11, "t": 3, "d": True},
]

RANGE_QUERIES = [
    {"t": {"$gt": 6}},
    {"t": {"$gte": 5, "$lt": 8}},
    {"t": {"$lte": 5}},
    {"t": {"$lt": datetime(2026, 6, 1)}},
    {"t": {"$gte": "5"}},
    {"d": {"$exists": False}, "h": {"$exists": False}},
    {"d": {"$exists": False}, "h": {"$exists": False}, "t": {"$gte": 5}},
]


@pytest.mark.parametrize("query", RANGE_QUERIES, ids=[str(q) for q in RANGE_QUERIES])
def test_ranges_and_compound_absent_fields_answered_from_indexes_find_what_a_scan_finds(client, db_name, query):
    scanned, indexed = client[db_name].scanned, client[db_name].indexed
    for coll in (scanned, indexed):
        coll.insert_many([dict(d) for d in RANGE_DOCS])
    indexed.create_index("t")
    indexed.create_index([("d", 1), ("h", 1)])
    assert keys(indexed, query) == keys(scanned, query)


def test_a_held_message_costs_a_query_on_absent_fields_nothing(client, db_name):
    # 20,000 undecided documents that carry the field, 5 that do not: the compound index finds the 5
    coll = client[db_name].messages
    coll.insert_many([{"h": {"kind": "retry"}, "i": i} for i in range(20_000)])
    coll.insert_many([{"i": -i} for i in range(1, 6)])
    query = {"d": {"$exists": False}, "h": {"$exists": False}}
    started = time.perf_counter()
    assert coll.count_documents(query) == 5
    scan = time.perf_counter() - started
    coll.create_index([("d", 1), ("h", 1)])
    started = time.perf_counter()
    assert coll.count_documents(query) == 5
    indexed = time.perf_counter() - started
    assert indexed < scan / 5, f"indexed {indexed * 1000:.1f} ms vs scan {scan * 1000:.1f} ms"
