"""The seed's own Node stack (MongoDB driver 6.20, Mongoose 8, jsonwebtoken) against the embedded default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pymongo
import pytest
from bson import Decimal128, Int64, ObjectId

from embedded.processes import free_port, msgstatus_argv
from jobs.communications import is_delivery
from tests import factories
from tests.conftest import SECRET
from tests.test_watcher import _redis_with_leader
from tests.waiting import wait_until

NODE_DIR = Path(__file__).parent / "node"

SNIPPET_WAIT_MS = 6000
"""The seed's snippet reads the message back after 6 seconds."""


@pytest.fixture(scope="module", autouse=True)
def _node_packages() -> None:
    if not (NODE_DIR / "node_modules" / "mongoose").is_dir():
        pytest.fail(f"the Node packages are not installed: run `make test`, or `npm ci --prefix {NODE_DIR}`")


def node(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout)


def test_mongoose_and_the_node_driver_get_mongodbs_answers_from_the_embedded_server(mongo_server, db_name):
    # Given the embedded server, reached by Mongoose through a relay that records every command and reply
    # When the seed's models start up and go through create, findById, a find over several batches,
    # countDocuments, aggregate, transactions that commit, abort and conflict, watch and error paths
    run = node("conformance.js", str(mongo_server.port), db_name)
    assert run.returncode in (0, 1), run.stderr
    report = json.loads(run.stdout)
    # Then every step worked, and every reply had MongoDB's fields with MongoDB's BSON types
    assert report["failures"] == [], "\n".join(report["failures"])
    assert all(step["ok"] for step in report["steps"])
    sent = {exchange["command"] for exchange in report["exchanges"]}
    assert {"find", "getMore", "killCursors", "aggregate", "listIndexes", "createIndexes", "create",
            "insert", "update", "commitTransaction", "abortTransaction", "endSessions"} <= sent
    errors = {(e["command"], e["code"]) for e in report["exchanges"] if e["ok"] is False}
    assert {("create", 48), ("listIndexes", 26), ("commitTransaction", 112), ("aggregate", 286),
            ("getMore", 43)} <= errors
    assert run.returncode == 0


def test_the_seeds_create_test_message_snippet_is_delivered_on_the_embedded_default_within_its_wait(tmp_path):
    # Given a conversation socket service in Node that verifies the Bearer token with jsonwebtoken,
    socket_log = (tmp_path / "socket.log").open("w+")
    socket = subprocess.Popen(["node", "socket-service.js"], cwd=NODE_DIR, env={**os.environ, "APP_SECRET": SECRET},
                              stdout=subprocess.PIPE, stderr=socket_log, text=True)
    run = None
    try:
        assert socket.stdout is not None
        socket_url = f"http://127.0.0.1:{socket.stdout.readline().split()[1]}"
        # and `msgstatus run` on the embedded default, sending to it
        mongo_port, redis_port = free_port(), free_port()
        env = {"PATH": os.environ["PATH"], "CONVERSATION_SOCKET": socket_url, "APP_SECRET": SECRET}
        with (tmp_path / "run.log").open("wb") as log:
            run = subprocess.Popen(
                msgstatus_argv("run", "--workers", "2", "--mongo-port", str(mongo_port), "--redis-port",
                               str(redis_port)),
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(lambda: _redis_with_leader(redis_port), 60, "the embedded servers and an active watcher").close()
        # When the seed's snippet creates a message and its communication log with Mongoose
        snippet = node("snippet.js", str(mongo_port), "msgstatus", socket_url, timeout=60)
        assert snippet.returncode == 0, snippet.stderr
        report = json.loads(snippet.stdout)
    finally:
        if run is not None:
            run.send_signal(signal.SIGTERM)
            run.wait(60)
        socket.terminate()
        socket.wait(10)
        if socket.stdout is not None:
            socket.stdout.close()
        socket_log.close()
    # Then findById reads it delivered, with its communication id, well inside the snippet's wait
    print(f"decided {report['decided_after_ms']} ms after the snippet began")
    assert report["delivered"] is True
    assert report["stored_communication_id"] == report["communication_id"]
    assert report["decided_after_ms"] is not None and report["decided_after_ms"] < SNIPPET_WAIT_MS / 2
    # and the socket service accepted one updateMessage whose token jsonwebtoken verified, with the seed's claims
    assert report["refused"] == []
    (emit,) = report["emits"]
    assert emit["event"] == "updateMessage"
    assert emit["data"]["delivered"] is True
    assert emit["data"]["metadata"]["communication_id"] == report["communication_id"]
    claims = emit["claims"]
    assert (claims["conversation_id"], claims["account_id"], claims["type"]) == (
        report["conversation_id"], report["account_id"], "team")
    assert emit["idempotencyKey"] == f"{report['message_id']}:{report['communication_id']}"
    # and every command Mongoose sent on the way got MongoDB's answer, field types included
    assert [p for e in report["exchanges"] for p in e["problems"]] == []
    assert {"insert", "find", "createIndexes"} <= {e["command"] for e in report["exchanges"]}


@pytest.fixture
def node_socket_service(tmp_path):
    """The Node socket service (jsonwebtoken) with a 16-byte APP_SECRET: its URL, then its report."""
    secret = "sixteen-byte-key"
    assert len(secret.encode()) == 16
    with (tmp_path / "socket.log").open("w+") as errors:
        socket = subprocess.Popen(["node", "socket-service.js"], cwd=NODE_DIR, env={**os.environ, "APP_SECRET": secret},
                                  stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert socket.stdout is not None
            yield secret, f"http://127.0.0.1:{socket.stdout.readline().split()[1]}"
        finally:
            socket.terminate()
            socket.wait(10)
            socket.stdout.close()


def test_a_16_byte_app_secret_is_taken_with_one_warning_and_the_node_socket_service_verifies_its_jwts(
    service, db, node_socket_service
):
    # Given a socket service whose existing secret is 16 bytes, and msgstatus given the same one
    secret, socket_url = node_socket_service
    env = {"APP_SECRET": secret, "CONVERSATION_SOCKET": socket_url}
    service.spawn("watch", **env)
    service.spawn("work", "--simple", **env)
    # When a message and its log arrive
    message_id = factories.message(db)
    factories.communication(db, message_id)
    wait_until(lambda: db.support_messages.find_one({"_id": message_id, "delivered": True}), 30, "the decision")
    # Then jsonwebtoken verified the emit's token
    with urllib.request.urlopen(f"{socket_url}/emits", timeout=10) as answer:
        report = json.load(answer)
    assert report["refused"] == []
    (emit,) = report["emits"]
    assert emit["data"]["_id"] == str(message_id) and emit["claims"]["type"] == "team"
    # and each process said once, at start, that the secret is short (and PyJWT did not say it per token)
    service.stop_all()
    for log in service.logs:
        text = log.read_text()
        assert text.count("APP_SECRET is 16 bytes, shorter than the 32 bytes HS256 wants") == 1, log.name
        assert "InsecureKeyLengthWarning" not in text


SUCCESS_VALUES = [True, False, "true", "TRUE", "True", " true", "false", 1, 0, 1.0, 2, -1, 0.5, "1", "0", "yes",
                  "Yes", "no", "y", "", None, Int64(1), Int64(0), Decimal128("1"), [True], {"ok": True}]
"""Values a provider callback might store in ``success``: Mongoose's cast table and its edges."""


@pytest.fixture(scope="module")
def seeds_verdicts(mongo_server) -> dict[str, bool]:
    """Each SUCCESS_VALUES log as the seed's job decides it: loaded by its Mongoose model, `_doc.success` tested."""
    database = f"cast_{os.getpid()}"
    ids = [ObjectId() for _ in SUCCESS_VALUES]
    with pymongo.MongoClient(mongo_server.url) as client:
        client[database].communications.insert_many([
            {"_id": oid, "conv_message_id": ObjectId(), "success": value}
            for oid, value in zip(ids, SUCCESS_VALUES, strict=True)
        ])
    run = node("cast.js", str(mongo_server.port), database)
    assert run.returncode == 0, run.stderr
    verdicts = {log["id"]: log["delivered"] for log in json.loads(run.stdout)}
    return {str(index): verdicts[str(oid)] for index, oid in enumerate(ids)}


@pytest.mark.parametrize("index", range(len(SUCCESS_VALUES)), ids=[repr(v) for v in SUCCESS_VALUES])
def test_success_means_delivered_exactly_when_the_seeds_mongoose_model_says_so(seeds_verdicts, index):
    assert is_delivery(SUCCESS_VALUES[index]) is seeds_verdicts[str(index)]
