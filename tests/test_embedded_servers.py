"""The embedded servers as processes: what they say, how they stop, what they are."""

from __future__ import annotations

import pymongo
import redis

from tests.conftest import start_mongo, start_redis


def test_mongo_says_it_is_in_memory_and_where_it_listens_and_stops_cleanly_on_sigterm():
    server = start_mongo()
    with pymongo.MongoClient(server.url) as client:
        client.db.c.insert_one({"x": 1})
        assert client.db.c.find_one({}, {"_id": 0}) == {"x": 1}
    code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "in-memory" in log and f"127.0.0.1:{server.port}" in log
    assert "Traceback" not in log


def test_crud_indexes_aggregate_and_find_one_and_update_work_over_the_wire(client, db_name):
    coll = client[db_name].messages
    coll.create_index("conv_message_id")
    coll.insert_many([{"n": i, "conv_message_id": i % 3} for i in range(9)])
    assert "conv_message_id_1" in coll.index_information()
    assert coll.count_documents({"conv_message_id": 1}) == 3
    found = coll.find_one_and_update(
        {"n": 4}, {"$set": {"claimed": True}}, return_document=pymongo.ReturnDocument.AFTER
    )
    assert found["claimed"] is True
    grouped = list(coll.aggregate([{"$group": {"_id": "$conv_message_id", "c": {"$sum": 1}}}, {"$sort": {"_id": 1}}]))
    assert grouped == [{"_id": 0, "c": 3}, {"_id": 1, "c": 3}, {"_id": 2, "c": 3}]
    coll.update_many({"n": {"$lt": 3}}, {"$set": {"low": True}})
    coll.delete_many({"low": True})
    assert coll.count_documents({}) == 6


def test_redis_is_a_real_redis_server_and_stops_cleanly():
    server = start_redis()
    r = redis.Redis.from_url(server.url)
    try:
        info = r.info("server")
        r.set("k", "v")
        assert r.get("k") == b"v"
    finally:
        r.close()
    assert info["redis_version"] and info["tcp_port"] == server.port
    assert server.stop() == 0
