"""The embedded server is, to a driver, the primary of a one-node replica set: retryable writes, cluster time,
transactions that a failed statement ends, and the failCommand fail point behind a flag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson import Timestamp
from pymongo import monitoring
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure, WriteConcernError

from embedded.defaults import REPLICA_SET
from tests.conftest import HOST, start_mongo
from tests.waiting import holds_for


class Replies(monitoring.CommandListener):
    """Every command sent and every reply received, by name."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.replies.append((event.command_name, dict(event.reply)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append((event.command_name, dict(getattr(event.failure, "details", None) or event.failure)))


@pytest.fixture
def replies() -> Replies:
    return Replies()


@pytest.fixture
def set_client(mongo_server, replies) -> Iterator[pymongo.MongoClient]:
    """A client that names the replica set, as production's MONGO_DB_URL does."""
    url = f"mongodb://{HOST}:{mongo_server.port}/?replicaSet={REPLICA_SET}"
    with pymongo.MongoClient(url, event_listeners=[replies], serverSelectionTimeoutMS=5000) as c:
        yield c


@pytest.fixture
def fail_point(client) -> Iterator[Any]:
    """Set the server's failCommand fail point; it is turned off after the test."""

    def configure(mode: Any, **data: Any) -> None:
        client.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})

    yield configure
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def test_the_driver_finds_the_primary_of_a_one_node_replica_set(set_client, replies, db_name):
    hello = set_client.admin.command("hello")
    member = f"{HOST}:{set_client.address[1]}"
    assert (hello["setName"], hello["hosts"], hello["primary"], hello["me"]) == (REPLICA_SET, [member], member, member)
    assert hello["isWritablePrimary"] is True and hello["logicalSessionTimeoutMinutes"] > 0
    set_client[db_name].x.insert_one({"a": 1})
    assert set_client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
    # Every reply carries the operation and cluster times, which advance with writes
    times = [reply["operationTime"] for name, reply in replies.replies if name in ("insert", "hello")]
    assert all(isinstance(t, Timestamp) for t in times) and times
    assert all(reply["$clusterTime"]["clusterTime"] >= reply["operationTime"] for _, reply in replies.replies)


def test_retryable_writes_carry_a_txn_number_and_a_retried_write_is_applied_once(
    mongo_server, set_client, replies, fail_point, db_name
):
    # Given a write that the server holds for 1 s, longer than the client waits for its reply
    set_client[db_name].x.insert_one({"_id": 1, "n": 0})
    impatient_url = f"mongodb://{HOST}:{mongo_server.port}/?replicaSet={REPLICA_SET}&socketTimeoutMS=400"
    fail_point({"times": 1}, failCommands=["update"], blockConnection=True, blockTimeMS=1000)
    # When the client gives up on it and retries (same lsid, same txnNumber) while the first is still held
    with pymongo.MongoClient(impatient_url, event_listeners=[replies]) as impatient:
        impatient[db_name].x.update_one({"_id": 1}, {"$inc": {"n": 1}})
    # Then both tries carried the same txnNumber, and the increment was applied once, also after the held
    # first try ran on (the server releases it 1 s after it came)
    updates = [command for name, command in replies.sent if name == "update"]
    assert len(updates) == 2 and updates[0]["txnNumber"] == updates[1]["txnNumber"]
    holds_for(lambda: set_client[db_name].x.find_one({"_id": 1})["n"] == 1, 1.5, "one increment")


def test_an_election_error_on_a_write_is_labelled_and_the_driver_retries_it(set_client, fail_point, db_name):
    fail_point({"times": 1}, failCommands=["insert"], errorCode=10107)  # NotWritablePrimary
    set_client[db_name].x.insert_one({"_id": "after-election"})
    assert set_client[db_name].x.count_documents({"_id": "after-election"}) == 1


def test_fail_point_modes_error_labels_app_name_and_closed_connections(client, fail_point, db_name):
    collection = client[db_name].x
    # skip: the first matching command passes, the later ones fail with the code and labels given
    fail_point({"skip": 1}, failCommands=["find"], errorCode=112, errorLabels=["TransientTransactionError"])
    collection.find_one()
    for _ in range(2):
        with pytest.raises(OperationFailure) as failed:
            collection.find_one()
        assert failed.value.code == 112 and failed.value.has_error_label("TransientTransactionError")
    fail_point("off")
    collection.find_one()
    # appName: only that client's commands fail
    fail_point("alwaysOn", failCommands=["aggregate"], errorCode=2, appName="other-app")
    assert collection.count_documents({}) == 0  # an aggregate
    with pymongo.MongoClient(f"mongodb://{HOST}:{client.address[1]}/?directConnection=true",
                             appName="other-app", retryReads=False) as other, pytest.raises(OperationFailure) as shut:
        other[db_name].x.count_documents({})
    assert shut.value.code == 2
    # closeConnection: the reply never comes
    fail_point({"times": 1}, failCommands=["delete"], closeConnection=True)
    with pytest.raises(AutoReconnect):
        client[db_name].command("delete", "x", deletes=[{"q": {}, "limit": 0}])


def test_a_failed_statement_aborts_its_transaction(set_client, db_name):
    collection = set_client[db_name].x
    collection.insert_one({"_id": 0})
    with set_client.start_session() as session:
        session.start_transaction()
        collection.insert_one({"_id": 1}, session=session)
        with pytest.raises(DuplicateKeyError):
            collection.insert_one({"_id": 0}, session=session)
        with pytest.raises(OperationFailure) as later:
            collection.insert_one({"_id": 2}, session=session)
        assert later.value.code == 251 and later.value.has_error_label("TransientTransactionError")
        with pytest.raises(OperationFailure) as commit:
            session.commit_transaction()
        assert commit.value.code == 251
    assert collection.count_documents({"_id": {"$in": [1, 2]}}) == 0


def test_fail_points_are_refused_without_the_flag(db_name):
    server = start_mongo()
    try:
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=20_000) as plain, \
                pytest.raises(OperationFailure, match="configureFailPoint"):
            plain.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                                 "data": {"failCommands": ["find"], "errorCode": 1}})
    finally:
        server.stop()


@pytest.mark.parametrize("code", [112, 24, 267, 246, 251])
def test_a_transient_commit_failure_is_labelled_and_with_transaction_commits_once(
    set_client, fail_point, db_name, code
):
    # Given a commit that fails once with a code MongoDB labels TransientTransactionError
    collection = set_client[db_name].x
    fail_point({"times": 1}, failCommands=["commitTransaction"], errorCode=code)
    runs = []

    def insert(session: Any) -> None:
        runs.append(1)
        collection.insert_one({"_id": 1}, session=session)

    # When withTransaction runs a transaction (the failed commit leaves it open on the server)
    with set_client.start_session() as session:
        session.with_transaction(insert)
    # Then it ran the transaction again in a new one, which the server started afresh, and committed it once
    assert len(runs) == 2
    assert list(collection.find()) == [{"_id": 1}]


def test_a_commit_failing_for_an_election_is_retried_as_a_commit_not_as_a_transaction(
    set_client, fail_point, replies, db_name
):
    fail_point({"times": 1}, failCommands=["commitTransaction"], errorCode=11602)
    with set_client.start_session() as session:
        session.with_transaction(lambda s: set_client[db_name].x.insert_one({"_id": 1}, session=s))
    labels = [reply.get("errorLabels") for name, reply in replies.failures if name == "commitTransaction"]
    assert labels == [["RetryableWriteError"]]
    assert [name for name, _ in replies.sent].count("insert") == 1
    assert set_client[db_name].x.count_documents({}) == 1


def test_a_commit_asking_more_members_than_the_set_has_gets_a_write_concern_error(set_client, db_name):
    collection = set_client[db_name].x
    with set_client.start_session() as session:
        session.start_transaction(write_concern=pymongo.WriteConcern(w=2))
        collection.insert_one({"_id": 1}, session=session)
        with pytest.raises(WriteConcernError) as failed:
            session.commit_transaction()
    # Committed, as on MongoDB, but not acknowledged by two members: nothing to retry, nothing unknown
    assert failed.value.code == 100
    assert not failed.value.has_error_label("UnknownTransactionCommitResult")
    assert not failed.value.has_error_label("TransientTransactionError")
    assert collection.count_documents({}) == 1
