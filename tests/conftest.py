"""Real servers for the tests: the embedded MongoDB and a real redis-server, on free ports."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import redis

from embedded.processes import free_port, start_server, stop

HOST = "127.0.0.1"
LOG_DIR = Path(os.environ.get("MSGSTATUS_TEST_LOGS", "/tmp/msgstatus-test-logs"))


class Server:
    """A server process started for the tests, with its URL and log file."""

    def __init__(self, args: list[str], port: int, url: str, name: str) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.port, self.url, self.args = port, url, args
        self.log_path = LOG_DIR / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.process: subprocess.Popen[bytes] = start_server(
            args, HOST, port, stdout=self._log, stderr=subprocess.STDOUT
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


def start_mongo(*extra: str, port: int | None = None) -> Server:
    port = port or free_port()
    url = f"mongodb://{HOST}:{port}/?directConnection=true"
    return Server(["mongo", "--host", HOST, "--port", str(port), *extra], port, url, "mongo")


def start_redis(port: int | None = None) -> Server:
    port = port or free_port()
    return Server(["redis", "--host", HOST, "--port", str(port)], port, f"redis://{HOST}:{port}/0", "redis")


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[Server]:
    server = start_mongo()
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
