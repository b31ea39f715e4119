"""The servers, the socket receiver and the two systems' processes that the benchmarks share."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import redis
from bson import ObjectId

from embedded.processes import free_port, msgstatus_argv, stop, wait_for_port
from msgstatus.harness import cpu_seconds
from msgstatus.receiver import Emit, SocketReceiver

SECRET = "bench-secret-that-is-at-least-32-bytes"

SYSTEM_APP = "bench-system"
"""The appName the systems' MongoDB clients give (the URL in their environment names it)."""
HERE = Path(__file__).parent


@dataclass
class Rig:
    """The servers and the socket receiver both systems share."""

    mongo_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.servers = [
            subprocess.Popen(msgstatus_argv("mongo", "--port", str(self.mongo_port)), stderr=subprocess.DEVNULL),
            subprocess.Popen(msgstatus_argv("redis", "--port", str(self.redis_port)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        wait_for_port("127.0.0.1", self.mongo_port, 30, self.servers[0])
        wait_for_port("127.0.0.1", self.redis_port, 30, self.servers[1])
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/msgstatus?directConnection=true"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        # Patient with long operations (a sweep over 50,000 documents), not with finding the server: a
        # server that the polling job keeps busy for minutes would hold close()'s endSessions that long.
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.mongo_url, serverSelectionTimeoutMS=20_000, socketTimeoutMS=600_000
        )
        self.db = self.client.msgstatus
        self.redis = redis.Redis(port=self.redis_port)
        self.receiver = SocketReceiver(SECRET).start()

    def env(self) -> dict[str, str]:
        # The systems name themselves to the server, which counts their commands apart (bench.cost)
        return {"PATH": os.environ["PATH"], "MONGO_DB_URL": f"{self.mongo_url}&appName={SYSTEM_APP}",
                "REDIS_URL": self.redis_url,
                "APP_SECRET": SECRET, "CONVERSATION_SOCKET": self.receiver.url, "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(HERE.parent)}

    def reset(self) -> None:
        self.client.drop_database("msgstatus")
        self.redis.flushall()
        self.receiver.emits.clear()
        self.receiver.listeners.clear()

    def commands(self) -> int:
        return int(self.client.admin.command("serverStatus")["wireCommands"])

    def close(self) -> None:
        self.receiver.stop()
        self.client.close()
        self.redis.close()
        for server in self.servers:
            stop(server)


class System:
    """One of the two systems' processes, started against the rig."""

    def __init__(self, name: str, rig: Rig, workers: int, simple: bool) -> None:
        self.name, self.rig = name, rig
        extra = ["--simple" if simple else "--fork"]
        if name == "msgstatus":
            argvs = [msgstatus_argv("watch"), msgstatus_argv("schedule")]
            argvs += [msgstatus_argv("work", *extra) for _ in range(workers)]
        else:
            base = [sys.executable, "-m", "bench.baseline_polling"]
            argvs = [[*base, "poll"]] + [[*base, "work", *extra] for _ in range(workers)]
        self.processes = [subprocess.Popen(a, env=rig.env(), stderr=subprocess.DEVNULL) for a in argvs]

    def ready(self) -> None:
        """msgstatus: the watcher holds the lock and both streams saved a token."""
        if self.name != "msgstatus":
            time.sleep(1)
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            streams = ("messages", "communications")
            if all(self.rig.redis.hget(f"msgstatus:watcher:stream:{s}", "token") for s in streams):
                return
            time.sleep(0.1)
        raise TimeoutError("the watcher never became active")

    def cpu(self) -> float:
        """CPU seconds of these processes and their reaped children (forked work horses)."""
        total = 0.0
        for process in self.processes:
            with open(f"/proc/{process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def message_doc(mid: ObjectId, decided: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": mid, "sender_type": "conversation", "sender_id": ObjectId(), "source": "sms",
                           "created": datetime.now(UTC), "metadata": {}}
    if decided:
        doc["delivered"] = True
    return doc


def comm_doc(mid: ObjectId) -> dict[str, Any]:
    return {"conv_message_id": mid, "account_id": ObjectId(), "success": True, "provider": "twilio"}


QUIET_SHARE = 0.1
"""Share of a core under which a server counts as quiet (its start-up work done)."""


def wait_quiet(pid: int, window: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until process ``pid`` spends under QUIET_SHARE of a core over two windows in a row (at most
    ``timeout`` seconds): a system's start-up work (index builds over stored documents) is over."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 2 and time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(window)
        quiet = quiet + 1 if cpu_seconds(pid) - before < QUIET_SHARE * window else 0


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def offer(rig: Rig, rate: float, seconds: float, settle: float) -> tuple[list[float], int]:
    """Write pairs at ``rate``/s for ``seconds``; latencies (ms) comm insert to emit, and pairs written."""
    inserted: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def on_emit(emit: Emit) -> None:
        with lock:
            started = inserted.get(emit.message_id)
            if started is not None:
                latencies.append((emit.received - started) * 1000)

    rig.receiver.listeners.append(on_emit)
    count = max(1, int(rate * seconds))
    began = time.monotonic()
    for i in range(count):
        mid = ObjectId()
        rig.db.support_messages.insert_one(message_doc(mid))
        with lock:
            inserted[str(mid)] = time.time()
        rig.db.communications.insert_one(comm_doc(mid))
        with lock:
            inserted[str(mid)] = time.time()
        pause = began + (i + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    deadline = time.monotonic() + settle
    while len(latencies) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return latencies, count


@contextmanager
def fresh_rig() -> Iterator[Rig]:
    rig = Rig()
    try:
        yield rig
    finally:
        rig.close()


def run_system(rig: Rig, name: str, workers: int, simple: bool, body: Callable[[System], Any]) -> Any:
    rig.reset()
    system = System(name, rig, workers, simple)
    try:
        system.ready()
        return body(system)
    finally:
        system.stop()

