"""Secrets stay secret; the emit's token is short-lived; what listens, listens on loopback."""

from __future__ import annotations

import json
import subprocess

import httpx
import jwt
import pytest
import redis
from bson import ObjectId
from rq.exceptions import NoSuchJobError
from rq.job import Job

from embedded.processes import free_port, wait_for_port
from embedded.redisserver import redis_argv
from jobs.emit import socket_token
from jobs.queueing import LAST_ERROR, job_id
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
        elif kind == "stream":  # RQ's job results
            value = r.xrange(key)
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


@pytest.mark.parametrize(
    ("host", "env", "said"),
    [
        ("0.0.0.0", {}, "without a password"),
        ("127.0.0.1", {"DASHBOARD_USER": "admin", "DASHBOARD_PASSWORD": ""}, "DASHBOARD_PASSWORD is empty"),
        ("0.0.0.0", {"DASHBOARD_USER": "admin"}, "DASHBOARD_PASSWORD is empty"),
        ("127.0.0.1", {"DASHBOARD_PASSWORD": "pw"}, "DASHBOARD_USER is not"),
    ],
)
def test_the_dashboard_refuses_to_start_where_anyone_could_delete_failed_jobs(service, host, env, said):
    # When the dashboard is asked to listen beyond loopback without a user, or given a user and no password
    port = free_port()
    result = service.run("dashboard", "--host", host, "--port", str(port), timeout=30, **env)
    # Then it exits with a configuration error naming what to set, before it ever listens
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr and said in result.stderr
    assert "DASHBOARD_USER" in result.stderr or "DASHBOARD_PASSWORD" in result.stderr


def _last_error(r: redis.Redis, message_id: str) -> str | None:
    try:
        return Job.fetch(job_id(message_id), connection=r).meta.get(LAST_ERROR)
    except NoSuchJobError:
        return None


def test_a_socket_url_with_a_password_never_reaches_mongo_redis_explain_the_api_or_logs(service, db):
    # Given a CONVERSATION_SOCKET with credentials in it, where nothing listens (every emit fails)
    socket = f"http://msgstatus:{MARKER}@{HOST}:{free_port()}"
    env = {"CONVERSATION_SOCKET": socket, "FAST_ATTEMPTS": "2", "LOG_LEVEL": "DEBUG"}
    api_port = free_port()
    service.spawn("watch", **env)
    service.spawn("work", "--simple", **env)
    service.spawn("schedule", **env)  # it moves due retries back onto the queue
    api = service.spawn("api", "--port", str(api_port), **env)
    wait_for_port(HOST, api_port, 30, api)
    # When a message and its log arrive and its emits fail until it waits for a slow retry
    r = redis.Redis.from_url(service.redis_url)
    message_id = factories.message(db)
    factories.communication(db, message_id)
    retried = wait_until(lambda: _last_error(r, str(message_id)), 30, "the first failed attempt's error in its job")
    held = wait_until(lambda: (db.support_messages.find_one({"_id": message_id, "status_hold.kind": "retry"})),
                      30, "the message held for a slow retry")
    explained = service.run("explain", str(message_id), "--json", **env)
    with httpx.Client() as http:
        served = http.get(f"http://{HOST}:{api_port}/api/messages/{message_id}").text
    jobs = [Job.fetch(key.decode().removeprefix("rq:job:"), connection=r) for key in r.scan_iter("rq:job:*")]
    in_redis = redis_contents(r) + "".join(f"{job.meta}{job.latest_result()}" for job in jobs)
    r.close()
    service.stop_all()
    stored = "".join(str(doc) for name in db.list_collection_names() for doc in db[name].find())
    # Then the error is there to read, with the URL's credentials masked, in every place an operator looks
    assert "msgstatus:***@" in held["status_hold"]["error"]
    assert "msgstatus:***@" in explained.stdout and "msgstatus:***@" in served
    assert "msgstatus:***@" in retried
    places = {"MongoDB": stored, "Redis": in_redis, "explain": explained.stdout + explained.stderr,
              "the API": served, "the logs": service.log_text()}
    assert {place for place, text in places.items() if MARKER in text} == set()
