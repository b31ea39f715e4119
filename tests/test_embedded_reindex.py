"""Updates re-index only what they change: indexed queries after updates find exactly what a scan finds."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

UPDATES = [
    ("unindexed field", {"$set": {"note": "x"}}),
    ("indexed field", {"$set": {"f": "b"}}),
    ("indexed field removed", {"$unset": {"f": ""}}),
    ("indexed field to an array", {"$set": {"f": ["a", "z"]}}),
    ("compound's second field", {"$set": {"g": 9}}),
    ("subdocument under an index", {"$set": {"h.kind": "held"}}),
    ("left as it was", {"$set": {"f": "a"}}),
]

QUERIES = [
    {"f": "a"}, {"f": "b"}, {"f": "z"}, {"f": {"$exists": False}}, {"f": None},
    {"f": "a", "g": 9}, {"f": "a", "g": 1}, {"h.kind": "held"}, {"h.kind": None},
]


def ids(coll, query) -> list[int]:
    return sorted(doc["_id"] for doc in coll.find(query))


def indexed_collections(db):
    """A collection with every index kind a query can use, and its unindexed twin, holding the same documents."""
    docs = [{"_id": i, "f": "a", "g": 1, "h": {"kind": None}} for i in range(6)]
    indexed, scanned = db.indexed, db.scanned
    for coll in (indexed, scanned):
        coll.insert_many([dict(d) for d in docs])
    indexed.create_index("f")
    indexed.create_index([("f", 1), ("g", 1)])
    indexed.create_index("h.kind")
    indexed.create_index("g", sparse=True, name="g_sparse")
    indexed.create_index("note", partialFilterExpression={"g": {"$gt": 5}}, name="note_partial")
    return indexed, scanned


@pytest.mark.parametrize(("what", "update"), UPDATES, ids=[u[0] for u in UPDATES])
def test_after_an_update_indexed_queries_find_exactly_what_a_scan_finds(client, db_name, what, update):
    indexed, scanned = indexed_collections(client[db_name])
    for coll in (indexed, scanned):
        coll.update_one({"_id": 2}, update)
        coll.update_many({"_id": {"$gte": 4}}, update)
        coll.find_one_and_update({"_id": 0}, update)
    for query in QUERIES:
        assert ids(indexed, query) == ids(scanned, query), query


def test_an_update_a_unique_index_refuses_leaves_every_index_as_it_was(client, db_name):
    coll = client[db_name].unique
    coll.insert_many([{"_id": 1, "u": "one", "f": "a"}, {"_id": 2, "u": "two", "f": "b"}])
    coll.create_index("u", unique=True)
    coll.create_index("f")
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 2}, {"$set": {"u": "one", "f": "c"}})
    assert ids(coll, {"u": "two"}) == [2] and ids(coll, {"f": "b"}) == [2]
    assert ids(coll, {"u": "one"}) == [1] and ids(coll, {"f": "c"}) == []


def test_an_update_in_an_aborted_transaction_leaves_every_index_as_it_was(client, db_name):
    coll = client[db_name].aborted
    coll.insert_many([{"_id": 1, "f": "a"}, {"_id": 2, "f": "a"}])
    coll.create_index("f")
    with client.start_session() as session:
        session.start_transaction()
        coll.update_one({"_id": 1}, {"$set": {"f": "b"}}, session=session)
        coll.update_one({"_id": 2}, {"$set": {"note": 1}}, session=session)
        assert ids(coll.with_options(), {"f": "b"}) == []  # outside the transaction: not yet
        session.abort_transaction()
    assert ids(coll, {"f": "a"}) == [1, 2] and ids(coll, {"f": "b"}) == []


def test_an_update_that_fails_on_a_document_leaves_the_indexes_of_those_it_did_not_change(client, db_name):
    coll = client[db_name].failing
    coll.insert_many([{"_id": 1, "f": "a", "n": 1}, {"_id": 2, "f": "a", "n": "text"}])
    coll.create_index("f")
    with pytest.raises(OperationFailure):
        coll.update_one({"_id": 2}, {"$set": {"f": "b"}, "$inc": {"n": 1}})  # $inc of a string fails
    assert ids(coll, {"f": "a"}) == [1, 2] and ids(coll, {"f": "b"}) == []
