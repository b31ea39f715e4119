"""Running ``msgstatus run`` on the embedded default in a child process, with a socket receiver.

Also used by the demo: it is the same "start everything, write traffic, watch emits" loop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import redis

from core.defaults import EMBEDDED_APP_SECRET, EMBEDDED_REPLICA_SET
from embedded.processes import free_port, kill_tree, msgstatus_argv
from msgstatus.receiver import SocketReceiver
from watcher.lock import LeaderLock


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RunningService:
    """``msgstatus run`` in a child process, its log, and clients for its servers."""

    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret: str = EMBEDDED_APP_SECRET

    def __post_init__(self) -> None:
        self.mongo_port, self.redis_port = free_port(), free_port()
        self.receiver = SocketReceiver(self.secret).start()
        self.log_path = Path(tempfile.mkstemp(prefix="msgstatus-run-", suffix=".log")[1])
        argv = msgstatus_argv(
            "run", *self.args, "--mongo-port", str(self.mongo_port), "--redis-port", str(self.redis_port)
        )
        env = {"PATH": os.environ["PATH"], "CONVERSATION_SOCKET": self.receiver.url, "LOG_LEVEL": "WARNING",
               **self.env}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/msgstatus?replicaSet={EMBEDDED_REPLICA_SET}"
        self.client: pymongo.MongoClient[dict] = pymongo.MongoClient(self.mongo_url)
        self.db = self.client.msgstatus
        self.redis = redis.Redis(port=self.redis_port)

    def wait_ready(self, timeout: float = 90, sweep_only: bool = False) -> None:
        """Until the servers answer and (unless sweep-only) a watcher holds the lock."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"msgstatus run exited:\n{self.log_path.read_text()}")
            try:
                if sweep_only or (LeaderLock.holder(self.redis) and
                                  self.redis.hget("msgstatus:watcher:stream:communications", "token")):
                    self.client.admin.command("ping")
                    if self.children() and len(self.children()) >= 3:
                        return
            except (redis.RedisError, pymongo.errors.PyMongoError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"msgstatus run not ready after {timeout}s:\n{self.log_path.read_text()}")

    def children(self) -> dict[str, int]:
        """The pid of each child, as the supervisor logged them."""
        found: dict[str, int] = {}
        for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", self.log_path.read_text()):
            found[name] = int(pid)
        return found

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            kill_tree(self.process.pid)
            code = self.process.wait()
        self.client.close()
        self.redis.close()
        self.receiver.stop()
        return code
