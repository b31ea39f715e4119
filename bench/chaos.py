"""``make chaos``: ``msgstatus run`` on the embedded default under steady traffic, faults one after
another, then the invariants over every message written, and a load run.

Run: ``make chaos`` (``python -m bench.chaos``); ``--quick`` is the short version the test suite runs.
Writes bench/chaos-results.md (``--out``) and exits 1 when an invariant fails.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import redis
from bson import ObjectId
from rq import Worker

from bench.chaos_checks import Phase, check_invariants, load_run, report
from bench.chaos_partial import Shedding, partial_outage
from bench.chaos_traffic import Ledger, Observer, Socket, Traffic
from core.defaults import SWEEP_INTERVAL
from embedded.processes import kill_tree
from msgstatus.harness import RunningService

HERE = Path(__file__).parent
RECOVERY_LIMIT = SWEEP_INTERVAL + 30
"""Seconds after a fault ends by which every message written before its end must be decided."""

RETRIES = {"FAST_ATTEMPTS": "3", "SLOW_RETRY": "20"}
"""The run's retry schedule, compressed from 10 fast attempts (8.5 minutes) and a 5-minute slow retry so
that an outage outlasts the fast attempts within a phase. Claims and sweeps keep their defaults."""

MID_JOB_PATIENCE = 60.0
"""Seconds the worker kill waits for a worker mid-job before the run fails, naming it."""

AFTERMATH = 5.0
"""Seconds after a fault's end whose messages still count as written during it."""


@dataclass
class Chaos:
    """The service, its traffic and the faults, one after another."""

    quick: bool
    workers: int = 2
    phases: list[Phase] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.service = RunningService(["--workers", str(self.workers), "--simple", "--api-port", "0"],
                                      env={**RETRIES, "LOG_LEVEL": "INFO"})
        self.ledger = Ledger()
        self.socket = Socket(self.service.receiver, self.ledger)
        self.traffic = Traffic(self.service.db, self.ledger, rate=5)
        self.observer = Observer(self.service.mongo_url, "msgstatus", self.ledger)
        self.killed: set[int] = set()
        self.shedding: Shedding | None = None

    def start(self) -> None:
        print(f"chaos: the service logs to {self.service.log_path}", flush=True)
        self.service.wait_ready()
        self.observer.start()
        if not self.observer.watching.wait(30):
            raise RuntimeError("the observer's change stream did not open within 30 s")
        self.traffic.start()
        self.settle(3)

    def settle(self, seconds: float) -> None:
        time.sleep(seconds)  # steady traffic between faults: this is the run, not a wait for a condition

    def child(self, name: str) -> int:
        return self.service.children()[name]

    def kill(self, name: str) -> float:
        """SIGKILL a supervised child (and all below it); the supervisor starts a new one."""
        pid = self.child(name)
        self.killed.add(pid)
        kill_tree(pid)
        return time.time()

    def fault(self, name: str, action: Callable[[], float]) -> None:
        """Run one fault; ``action`` returns when it ended. Then wait for recovery and record it."""
        print(f"chaos: {name} ...", flush=True)
        started = time.time()
        ended = action()
        # Messages written up to 5 s after the end count too (a killed process is being replaced).
        window, deadline = ended + AFTERMATH, ended + RECOVERY_LIMIT + AFTERMATH
        while time.time() < window or (self.ledger.pending(window) and time.time() < deadline):
            time.sleep(0.5)
        phase = Phase(name, started, ended, written=self.ledger.written_between(started, window),
                      recovery=max(0.0, self.ledger.last_decision(ended) - ended),
                      worst_delay=self.ledger.worst_delay(started, window),
                      pending=len(self.ledger.pending(ended)))
        self.phases.append(phase)
        print(f"chaos: {name}: recovered in {phase.recovery:.1f}s, {phase.pending} pending", flush=True)
        self.settle(2)

    # The faults ---------------------------------------------------------------------------------

    def kill_watcher(self) -> float:
        return self.kill("watcher")

    def kill_watcher_mid_batch(self) -> float:
        burst = Traffic(self.service.db, self.ledger, rate=1)
        writing = threading.Thread(target=burst.burst, args=(100 if self.quick else 300,))
        writing.start()
        before = len(self.ledger.messages)
        while len(self.ledger.messages) < before + (40 if self.quick else 120):
            time.sleep(0.01)
        ended = self.kill("watcher")
        writing.join()
        return max(ended, time.time())

    def kill_worker_mid_job(self) -> float:
        self.socket.receiver.behaviour.delay = 1.0  # so that status jobs spend a second mid-emit
        deadline = time.monotonic() + MID_JOB_PATIENCE
        try:
            while time.monotonic() < deadline:
                busy = self._worker_in_emit()
                if busy is not None:
                    return self.kill(busy)
                time.sleep(0.01)
            raise RuntimeError(f"no worker was mid-job on a message with its log within {MID_JOB_PATIENCE:.0f}s")
        finally:
            self.socket.receiver.behaviour.delay = 0

    def _worker_in_emit(self) -> str | None:
        """A worker child running the job of a message that has its log, or a batch job, 0.2 s into it.

        With every emit taking a second, events pile up and arrive together: most jobs are then batches.
        """
        children = {pid: name for name, pid in self.service.children().items() if name.startswith("worker")}
        for worker in Worker.all(connection=self.service.redis):
            job_id = worker.get_current_job_id() or ""
            message = self.ledger.messages.get(ObjectId(job_id[7:31])) if job_id.startswith("status-") else None
            deciding = job_id.startswith("batch-") or (message is not None and message.with_log)
            if worker.pid in children and deciding:
                time.sleep(0.2)
                if worker.get_current_job_id() == job_id:
                    return children[worker.pid]
        return None

    def restart_redis_empty(self) -> float:
        self.kill("redis")
        client = redis.Redis(port=self.service.redis_port)
        while True:
            try:
                client.ping()
                return time.time()
            except redis.RedisError:
                time.sleep(0.05)

    def socket_outage(self) -> float:
        each = 5 if self.quick else 20
        self.socket.receiver.behaviour.status = 503
        time.sleep(each)
        self.socket.down()
        time.sleep(each)
        self.socket.up()
        self.socket.receiver.behaviour.delay = 2.0
        time.sleep(each)
        self.socket.receiver.behaviour.delay = 0
        return time.time()

    def socket_down_past_fast_retries(self) -> float:
        """503 for longer than every fast attempt takes: messages wait for slow retries, then heal."""
        self.socket.receiver.behaviour.status = 503
        time.sleep(10 if self.quick else 30)
        self.socket.receiver.behaviour.status = 200
        return time.time()

    def drop_redis_while_retries_move(self) -> float:
        """Emits fail, then retries move while every Redis connection is dropped again and again, and
        a mover through a relay loses its connection right after taking a retry out of the registry."""
        from jobs.queueing import status_queue
        from jobs.retries import move_due
        from tests.relay import Relay

        self.socket.receiver.behaviour.status = 503
        time.sleep(4)
        self.socket.receiver.behaviour.status = 200
        relay = Relay(self.service.redis_port)
        mover = redis.Redis(port=relay.port, socket_timeout=2)
        until, trips, dropped = time.time() + 8, 0, 0
        try:
            while time.time() < until:
                relay.trip_on(b"rq:scheduled:support_message_status_queue")
                with contextlib.suppress(redis.RedisError):
                    move_due(status_queue(mover))
                trips += relay.tripped.is_set()
                dropped += self.service.redis.client_kill_filter(_type="normal", skipme=True)
                time.sleep(0.25)
        finally:
            mover.close()
            relay.close()
        print(f"chaos: {trips} moves cut right after their registry command, {dropped} connections dropped",
              flush=True)
        return time.time()

    def restart_database(self) -> float:
        # What was written so far is checked now: it is gone with the server.
        self.traffic.paused.set()
        self.checkpoint = check_invariants(self, final=False)
        self.kill("mongo")
        self.ledger.epoch += 1
        self.traffic.paused.clear()
        client: pymongo.MongoClient[dict] = pymongo.MongoClient(self.service.mongo_url, serverSelectionTimeoutMS=500)
        with client:
            while True:
                try:
                    client.admin.command("ping")
                    return time.time()
                except pymongo.errors.PyMongoError:
                    time.sleep(0.05)

    def stop(self) -> int:
        self.traffic.stopping.set()
        self.traffic.join()
        self.observer.stopping.set()
        self.observer.join()
        code = self.service.stop()
        self.socket.stop()
        return code


def run(quick: bool, skip_load: bool = False) -> tuple[str, bool]:
    chaos = Chaos(quick)
    try:
        chaos.start()
        chaos.fault("SIGKILL the watcher", chaos.kill_watcher)
        chaos.fault("SIGKILL the watcher mid-batch", chaos.kill_watcher_mid_batch)
        chaos.fault("SIGKILL a worker mid-job", chaos.kill_worker_mid_job)
        if not quick:
            chaos.fault("Redis restarted empty", chaos.restart_redis_empty)
            chaos.fault("socket 503, unreachable, slow (2 s)", chaos.socket_outage)
            chaos.fault("socket service down past every fast retry", chaos.socket_down_past_fast_retries)
            chaos.fault("Redis connection dropped while retries move", chaos.drop_redis_while_retries_move)
            chaos.fault("socket 503 (a backlog), then 30% 503 + 10% 429", lambda: partial_outage(chaos))
            chaos.fault("database restarted (empty)", chaos.restart_database)
            chaos.settle(15)  # traffic into the new database, through a watcher that recovered
        chaos.traffic.stopping.set()
        chaos.traffic.join()
        chaos.settle(1)
        final = check_invariants(chaos, final=True)
    finally:
        chaos.stop()
    load = None if quick or skip_load else load_run()
    return report(chaos, final, load), final.ok and (load is None or load.ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="three faults, short: the test suite's version")
    parser.add_argument("--skip-load", action="store_true", help="the faults only, no load run")
    parser.add_argument("--out", type=Path, default=HERE / "chaos-results.md")
    args = parser.parse_args()
    text, ok = run(args.quick, args.skip_load)
    args.out.write_text(text)
    print(text)
    print(f"chaos: {'all invariants hold' if ok else 'AN INVARIANT FAILED'}; written to {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
