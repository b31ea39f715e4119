"""Secrets stay secret; the emit's token is short-lived; what listens, listens on loopback."""

from __future__ import annotations

import json
import subprocess

import jwt
import pytest
import redis
from bson import ObjectId

from embedded.processes import free_port, wait_for_port
from embedded.redisserver import redis_argv
from jobs.emit import socket_token
from tests import factories
from tests.conftest import HOST, start_mongo
from tests.waiting import wait_until

MARKER = "s3cr3t-marker-7f1c9e"


def test_the_emit_token_carries_only_the_seeds_claims_and_cannot_be_reused_after_two_minutes():
    secret = "k" * 32
    token = socket_token("conversation", "account", secret)
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert set(claims) == {"conversation_id", "account_id", "type", "iat", "exp"}
    with pytest.raises(jwt.ExpiredSignatureError):  # as it would be judged 121 s from now
        jwt.decode(token, secret, algorithms=["HS256"], leeway=-121, options={"verify_iat": False})


def redis_contents(r: redis.Redis) -> str:
    """Every key and value in Redis, as text, to search for a secret."""
    parts = []
    for key in r.scan_iter():
        kind = r.type(key).decode()
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1)
        else:
            value = kind
        parts.append(f"{key!r}={value!r}")
    return "\n".join(parts)


@pytest.fixture
def guarded_servers(tmp_path):
    """A MongoDB and a Redis that both require passwords containing MARKER."""
    mongo = start_mongo("--user", "app", env={"EMBEDDED_MONGO_PASSWORD": f"mongo-{MARKER}"})
    port = free_port()
    redis_process = subprocess.Popen(
        [*redis_argv(HOST, port), "--requirepass", f"redis-{MARKER}"], stdout=subprocess.DEVNULL
    )
    wait_for_port(HOST, port, 30, redis_process)
    yield mongo, port
    redis_process.terminate()
    redis_process.wait(10)
    mongo.stop()


def test_no_url_password_or_secret_reaches_repr_the_logs_of_msgstatus_run_or_redis(service, receiver, guarded_servers):
    mongo, redis_port = guarded_servers
    mongo_url = (
        f"mongodb://app:mongo-{MARKER}@{HOST}:{mongo.port}/{service.database}"
        "?directConnection=true&authSource=admin&authMechanism=SCRAM-SHA-256"
    )
    redis_url = f"redis://:redis-{MARKER}@{HOST}:{redis_port}/0"
    receiver.secret = f"app-secret-{MARKER}-padded-to-32-bytes"
    env = {"MONGO_DB_URL": mongo_url, "REDIS_URL": redis_url, "APP_SECRET": receiver.secret, "LOG_LEVEL": "DEBUG"}
    import pymongo

    from core.settings import Settings

    shown = repr(Settings.from_env(env))
    assert MARKER not in shown and ":***@" in shown
    with pymongo.MongoClient(mongo_url) as client:
        db = client[service.database]
        service.spawn("run", "--api-port", "0", **env)
        r = redis.Redis.from_url(redis_url)
        wait_until(lambda: r.hget("msgstatus:watcher:stream:communications", "token"), 60, "the watcher")
        good = factories.message(db)
        factories.communication(db, good)
        wait_until(lambda: db.support_messages.find_one({"_id": good, "delivered": True}), 30, "a delivery")
        receiver.behaviour.fail_next = [401]  # a refused emit is logged with its error, then retried
        retried = factories.message(db)
        factories.communication(db, retried)
        wait_until(lambda: db.support_messages.find_one({"_id": retried, "delivered": True}), 30, "a retry")
        bad = factories.message(db)  # bad data leaves a job in the failed registry, with its error text
        factories.communication(db, bad, account_id=None)
        wait_until(lambda: r.zcard("rq:failed:support_message_status_queue"), 30, "a failed job")
        receiver.behaviour.fail_next = [503]
        status = service.run("status", "--json", **env)
        contents = redis_contents(r)
        r.close()
        service.stop_all()  # while its servers still answer: its shutdown's lines are searched too
    assert json.loads(status.stdout)["queue"]["failed_messages"] == [str(bad)]
    logs = service.log_text() + status.stdout + status.stderr
    assert "DEBUG" in logs  # the logs were as verbose as they get
    for place, text in (("logs and status", logs), ("Redis", contents)):
        assert MARKER not in text, f"a secret reached {place}"
    assert str(ObjectId()) not in contents  # sanity: the search itself works on ids ...
    assert str(bad) in contents  # ... and the failed job (naming only the message id) is there


def test_the_metrics_endpoint_listens_on_loopback_by_default(service):
    port = free_port()
    process = service.spawn("api", "--port", str(port))
    wait_for_port(HOST, port, 30, process)
    with open(f"/proc/{process.pid}/net/tcp") as tcp:
        listening = [line.split()[1] for line in tcp.readlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{port:04X}" in listening
