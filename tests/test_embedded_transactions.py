"""Transactions against the embedded MongoDB behave like MongoDB's under concurrency."""

from __future__ import annotations

import threading

import pytest
from pymongo.errors import OperationFailure


def test_an_aborted_transaction_leaves_nothing(client, db_name):
    with client.start_session() as session:
        session.start_transaction()
        client[db_name].a.insert_one({"x": 1}, session=session)
        client[db_name].b.insert_one({"y": 1}, session=session)
        session.abort_transaction()
    assert client[db_name].a.count_documents({}) == 0
    assert client[db_name].b.count_documents({}) == 0


def test_a_committed_transaction_applies_all_its_writes(client, db_name):
    _id = client[db_name].a.insert_one({"n": 0, "keep": 1}).inserted_id
    with client.start_session() as session:
        session.with_transaction(
            lambda s: (
                client[db_name].a.update_one({"_id": _id}, {"$set": {"n": 1}}, session=s),
                client[db_name].b.insert_one({"ref": _id}, session=s),
            )
        )
    assert client[db_name].a.find_one({"_id": _id}) == {"_id": _id, "n": 1, "keep": 1}
    assert client[db_name].b.count_documents({"ref": _id}) == 1


def test_a_transaction_commits_while_another_client_inserts_elsewhere(client, other_client, db_name):
    _id = client[db_name].messages.insert_one({"delivered": None}).inserted_id
    with client.start_session() as session:
        session.start_transaction()
        client[db_name].messages.update_one({"_id": _id}, {"$set": {"delivered": True}}, session=session)
        other_client[db_name].communications.insert_one({"other": 1})  # another collection
        other_client[db_name + "_x"].anything.insert_one({"other": 2})  # another database
        other_client[db_name].messages.insert_one({"another": "message"})  # same collection, other doc
        session.commit_transaction()
    assert client[db_name].messages.find_one({"_id": _id})["delivered"] is True
    assert client[db_name].messages.count_documents({}) == 2
    assert client[db_name].communications.count_documents({}) == 1


def test_a_conflict_on_the_same_document_is_write_conflict_112_and_transient(client, other_client, db_name):
    _id = client[db_name].messages.insert_one({"n": 0}).inserted_id
    with client.start_session() as session:
        session.start_transaction()
        client[db_name].messages.update_one({"_id": _id}, {"$inc": {"n": 1}}, session=session)
        other_client[db_name].messages.update_one({"_id": _id}, {"$set": {"other": 1}})
        with pytest.raises(OperationFailure) as error:
            session.commit_transaction()
    assert error.value.code == 112
    assert error.value.has_error_label("TransientTransactionError")
    assert client[db_name].messages.find_one({"_id": _id}) == {"_id": _id, "n": 0, "other": 1}


def test_with_transaction_retries_a_real_conflict_to_success(client, other_client, db_name):
    _id = client[db_name].messages.insert_one({"n": 0}).inserted_id
    attempts = []

    def callback(session):
        attempts.append(1)
        client[db_name].messages.update_one({"_id": _id}, {"$inc": {"n": 1}}, session=session)
        if len(attempts) == 1:
            other_client[db_name].messages.update_one({"_id": _id}, {"$set": {"other": 1}})

    with client.start_session() as session:
        session.with_transaction(callback)
    assert len(attempts) == 2
    assert client[db_name].messages.find_one({"_id": _id}) == {"_id": _id, "n": 1, "other": 1}


def test_after_a_failed_commit_the_client_sees_every_document_written_since(client, other_client, db_name):
    _id = client[db_name].messages.insert_one({"n": 0}).inserted_id
    with client.start_session() as session:
        session.start_transaction()
        client[db_name].messages.update_one({"_id": _id}, {"$inc": {"n": 1}}, session=session)
        other_client[db_name].messages.update_one({"_id": _id}, {"$set": {"other": 1}})
        with pytest.raises(OperationFailure):
            session.commit_transaction()
    other_client[db_name].later.insert_one({"written": "after"})
    assert client[db_name].later.count_documents({}) == 1
    with client.start_session() as session:  # pymongo reuses the pooled lsid
        assert client[db_name].later.count_documents({}, session=session) == 1


def test_after_a_commit_or_an_abort_the_client_sees_every_document_written_since(client, other_client, db_name):
    for finish in ("commit_transaction", "abort_transaction"):
        with client.start_session() as session:
            session.start_transaction()
            client[db_name].mine.insert_one({"x": 1}, session=session)
            getattr(session, finish)()
        other_client[db_name].later.insert_one({"after": finish})
        assert client[db_name].later.count_documents({"after": finish}) == 1


def test_a_transaction_still_sees_its_own_snapshot_while_others_write(client, other_client, db_name):
    with client.start_session() as session:
        session.start_transaction()
        assert client[db_name].m.count_documents({}, session=session) == 0
        other_client[db_name].m.insert_one({"x": 1})
        assert client[db_name].m.count_documents({}, session=session) == 0
        session.commit_transaction()
    assert client[db_name].m.count_documents({}) == 1


def test_a_unique_index_clash_between_a_transaction_and_another_client_conflicts(client, other_client, db_name):
    client[db_name].m.create_index("key", unique=True)
    with client.start_session() as session:
        session.start_transaction()
        client[db_name].m.insert_one({"key": "k"}, session=session)
        other_client[db_name].m.insert_one({"key": "k"})
        with pytest.raises(OperationFailure) as error:
            session.commit_transaction()
    assert error.value.code == 112
    assert client[db_name].m.count_documents({"key": "k"}) == 1


def test_several_clients_writing_while_transactions_are_open_lose_nothing(mongo_url, db_name):
    import pymongo

    messages = 40
    with pymongo.MongoClient(mongo_url) as setup:
        ids = setup[db_name].messages.insert_many([{"n": 0} for _ in range(messages)]).inserted_ids
    errors: list[BaseException] = []

    def decide(part: list) -> None:
        try:
            with pymongo.MongoClient(mongo_url) as c:
                for _id in part:
                    with c.start_session() as s:
                        s.with_transaction(
                            lambda s, _id=_id: (
                                c[db_name].messages.update_one({"_id": _id}, {"$set": {"decided": True}}, session=s),
                                c[db_name].emits.insert_one({"message": _id}, session=s),
                            )
                        )
        except BaseException as error:
            errors.append(error)

    def insert_noise() -> None:
        try:
            with pymongo.MongoClient(mongo_url) as c:
                for i in range(200):
                    c[db_name].noise.insert_one({"i": i})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=decide, args=(ids[i::2],)) for i in range(2)]
    threads.append(threading.Thread(target=insert_noise))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with pymongo.MongoClient(mongo_url) as c:
        assert c[db_name].messages.count_documents({"decided": True}) == messages
        assert c[db_name].emits.count_documents({}) == messages
        assert c[db_name].noise.count_documents({}) == 200
