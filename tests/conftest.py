"""Real servers for the tests: the embedded MongoDB and a real redis-server, on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from pymongo.database import Database
from rq import Queue

from embedded.processes import free_port, kill_tree, msgstatus_argv, start_server, stop
from jobs.queueing import status_queue
from msgstatus.receiver import SocketReceiver

HOST = "127.0.0.1"
LOG_DIR = Path(os.environ.get("MSGSTATUS_TEST_LOGS", "/tmp/msgstatus-test-logs"))


class Server:
    """A server process started for the tests, with its URL and log file."""

    def __init__(self, args: list[str], port: int, url: str, name: str, env: dict[str, str] | None = None) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.port, self.url, self.args = port, url, args
        self.log_path = LOG_DIR / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.process: subprocess.Popen[bytes] = start_server(
            args, HOST, port, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        code = stop(self.process)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_mongo(*extra: str, port: int | None = None, env: dict[str, str] | None = None) -> Server:
    port = port or free_port()
    url = f"mongodb://{HOST}:{port}/?directConnection=true"
    return Server(["mongo", "--host", HOST, "--port", str(port), *extra], port, url, "mongo", env)


def start_redis(port: int | None = None) -> Server:
    port = port or free_port()
    return Server(["redis", "--host", HOST, "--port", str(port)], port, f"redis://{HOST}:{port}/0", "redis")


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[Server]:
    """The embedded server of this test process, with fail points (tests set them only for their own client's
    appName, or turn them off after)."""
    server = start_mongo("--enable-test-commands")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def mongo_url(mongo_server: Server) -> str:
    return mongo_server.url


@pytest.fixture
def client(mongo_url: str) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(mongo_url) as c:
        yield c


@pytest.fixture
def other_client(mongo_url: str) -> Iterator[pymongo.MongoClient]:
    """A second, independent client (its own connections and sessions)."""
    with pymongo.MongoClient(mongo_url) as c:
        yield c


@pytest.fixture
def db_name() -> str:
    """Each test gets a database of its own."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_url(redis_server: Server) -> Iterator[str]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    yield redis_server.url
    r.close()


SECRET = "test-secret-that-is-at-least-32-bytes-long"


@pytest.fixture
def receiver() -> Iterator[SocketReceiver]:
    """A real HTTP socket-service stand-in that verifies the JWT."""
    r = SocketReceiver(SECRET).start()
    yield r
    r.stop()


@dataclass
class Service:
    """msgstatus processes for one test, sharing its database, Redis and receiver."""

    env: dict[str, str]
    mongo_url: str
    redis_url: str
    database: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``msgstatus ARGS`` in its own process group (so SIGTERM reaches all of it)."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        path = LOG_DIR / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                msgstatus_argv(*args), env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        self.logs.append(path)
        return process

    def log_text(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``msgstatus ARGS`` to completion."""
        return subprocess.run(
            msgstatus_argv(*args), env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``process`` and all below it (RQ's work horses included) and reap it."""
        kill_tree(process.pid)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(process)

    def db(self, client: pymongo.MongoClient) -> Database:
        return client[self.database]


@pytest.fixture
def service(mongo_server: Server, redis_url: str, db_name: str, receiver: SocketReceiver) -> Iterator[Service]:
    mongo_url = f"mongodb://{HOST}:{mongo_server.port}/{db_name}?directConnection=true"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MONGO_DB_URL": mongo_url,
        "REDIS_URL": redis_url,
        "APP_SECRET": SECRET,
        "CONVERSATION_SOCKET": receiver.url,
        "SWEEP_INTERVAL": "5",
        "CLAIM_TTL": "60",
        "LOG_LEVEL": "INFO",
    }
    svc = Service(env, mongo_url, redis_url, db_name)
    yield svc
    svc.stop_all()


@pytest.fixture
def db(service: Service, client: pymongo.MongoClient) -> Database:
    """The test's database, through the test's client."""
    return client[service.database]


@pytest.fixture
def queue(service: Service) -> Iterator[Queue]:
    """The status queue on the test's Redis."""
    r = redis.Redis.from_url(service.redis_url)
    yield status_queue(r)
    r.close()


def commands_sent(client: pymongo.MongoClient, app: str, name: str) -> int:
    """How many ``name`` commands the clients named ``app`` sent so far (the server counts them per appName)."""
    return int(client.admin.command("serverStatus")["wireCommandsByApp"].get(app, {}).get(name, 0))


APP = "msgstatus-under-test"
"""The appName the service's processes give where a test fails only their commands (``fail_point``)."""


@pytest.fixture
def fail_point(client) -> Iterator[Any]:
    """Set failCommand for the service's processes only; turned off after the test."""

    def configure(mode: Any, **data: Any) -> int:
        """Set it; how often it fired since it was last set."""
        reply = client.admin.command({"configureFailPoint": "failCommand", "mode": mode,
                                      "data": {**data, "appName": APP}})
        return int(reply["count"])

    yield configure
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
