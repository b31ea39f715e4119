"""``$in`` over long lists: the same answers as short lists give, in linear time."""

from __future__ import annotations

import re

import pymongo
from bson import Decimal128, Int64, ObjectId
from bson.regex import Regex

DOCS = [
    {"k": 1, "f": 1}, {"k": 2, "f": 1.0}, {"k": 3, "f": "1"}, {"k": 4, "f": [2, "x"]}, {"k": 5},
    {"k": 6, "f": None}, {"k": 7, "f": True}, {"k": 8, "f": {"a": 1}}, {"k": 9, "f": "Abc"},
    {"k": 10, "f": ObjectId("6b0000000000000000000001")}, {"k": 11, "f": "6b0000000000000000000001"},
    {"k": 12, "f": Decimal128("1")}, {"k": 13, "f": Int64(2)}, {"k": 14, "f": 2.5}, {"k": 15, "f": "abc"},
]

FILLER = [f"filler-{i}" for i in range(50)]
"""Values nothing matches, so that each list is long enough for the hashed matcher."""

VALUE_LISTS = [
    [1], [1.0], ["1"], [2], ["x"], [None], [True], [{"a": 1}], [re.compile("^A")], [Regex("^a", "i")],
    [ObjectId("6b0000000000000000000001")], ["6b0000000000000000000001"], [1, "x", None, {"a": 1}],
    [Decimal128("1")], [Int64(2)], [2.5], ["abc"], [Decimal128("2.5"), "Abc"], [False], [0],
]


def keys(coll, query) -> list[int]:
    return sorted(doc["k"] for doc in coll.find(query))


def test_a_long_in_list_matches_exactly_what_its_values_match_one_by_one(client, db_name):
    coll = client[db_name].docs
    coll.insert_many([dict(d) for d in DOCS])
    for values in VALUE_LISTS:
        expected = sorted({k for value in values for k in keys(coll, {"f": {"$in": [value]}})})
        assert keys(coll, {"f": {"$in": [*FILLER, *values]}}) == expected, values
        assert keys(coll, {"f": {"$nin": [*FILLER, *values]}}) == sorted(
            {d["k"] for d in DOCS} - set(expected)), values
        pipeline = [{"$match": {"f": {"$in": [*FILLER, *values]}}}]
        assert sorted(d["k"] for d in coll.aggregate(pipeline)) == expected, values


def test_a_10000_id_in_over_10000_documents_updates_them_all_at_once(mongo_url, db_name):
    # 10^8 comparisons (minutes) value by value; a hash lookup per document here
    with pymongo.MongoClient(mongo_url, socketTimeoutMS=60_000) as client:
        coll = client[db_name].messages
        ids = coll.insert_many([{"i": i} for i in range(10_000)]).inserted_ids
        result = coll.update_many({"_id": {"$in": ids}}, {"$set": {"flag": True}})
        assert result.modified_count == 10_000
        assert coll.count_documents({"flag": True, "i": {"$in": list(range(0, 10_000, 2))}}) == 5_000
