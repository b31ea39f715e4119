"""What one message costs the database server under three sequences of commands, replayed one message at a
time on one embedded server, in alternating rounds:

- the polling job's: its lookup (``find``), its decision (``findAndModify`` in a transaction, and the
  commit) and its flag's reset (``update``), through ``bench.baseline_polling``'s own code; no
  change stream open;
- msgstatus's: both change streams open as the watcher holds them, a ``getMore`` reading each insert's
  event, then the job's claim (``findAndModify``) and its decision (``update``);
- the least an event-driven design can send for a message that arrives alone: the log's stream only, and
  the decision's ``update``. Less would give up a promise: without the claim a second emit is possible,
  without the message stream a message written after its log waits for a sweep.

The writer's two inserts per message are measured alone in each round and taken off. Reported: each
sequence's server CPU per message against the polling job's, the median of the rounds.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from typing import Any

import pymongo
from bson import ObjectId

from bench import baseline_polling
from bench.rig import Rig, comm_doc, message_doc
from jobs import decisions, messages
from msgstatus.harness import cpu_seconds
from watcher.stream import STREAMS, StreamSpec

SEQUENCES = {
    "polling job": ("find, findAndModify, commitTransaction, update", ()),
    "msgstatus": ("2 getMore, findAndModify, update", ("messages", "communications")),
    "least event-driven": ("getMore, update", ("communications",)),
}
"""Each sequence: the commands it sends per message, and the change streams it holds open."""

WARM = 20
"""Messages replayed before each measurement."""

Job = Callable[[ObjectId, ObjectId], None]


class _Stream:
    """One of the watcher's change streams, read on a thread; ``seen`` counts its events."""

    def __init__(self, client: pymongo.MongoClient[dict[str, Any]], spec: StreamSpec) -> None:
        self.seen, self.stop, ready = threading.Semaphore(0), False, threading.Event()

        def read() -> None:
            with client.msgstatus[spec.collection].watch(spec.pipeline, full_document=spec.full_document,
                                                          max_await_time_ms=200) as stream:
                ready.set()
                while not self.stop:
                    if stream.try_next() is not None:
                        self.seen.release()

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"the {spec.name} stream did not open within 30 s")

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)


def bench_floor(rig: Rig, rounds: int, count: int, plain_cpu: float) -> dict[str, Any]:
    """Server CPU per message of each sequence, against the polling job's (medians of ``rounds``)."""
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(rig.mongo_url, appName="bench-floor") as client:
        db: Any = client.msgstatus
        messages.ensure_indexes(db)
        jobs: dict[str, Job] = {"polling job": _polling(client), "msgstatus": _msgstatus(db),
                                "least event-driven": _least(db)}
        specs = {spec.name: spec for spec in STREAMS}

        def replay(job: Job | None, streams: list[_Stream]) -> float:
            def one() -> None:
                mid = ObjectId()
                rig.db.support_messages.insert_one(message_doc(mid))
                cid = rig.db.communications.insert_one(comm_doc(mid)).inserted_id
                for stream in streams:
                    if not stream.seen.acquire(timeout=10):
                        raise RuntimeError("a change event did not arrive within 10 s")
                if job:
                    job(mid, cid)
            for _ in range(WARM):
                one()
            began = cpu_seconds(rig.servers[0].pid)
            for _ in range(count):
                one()
            return (cpu_seconds(rig.servers[0].pid) - began) / count

        shares: dict[str, list[float]] = {name: [] for name in SEQUENCES}
        units: dict[str, list[float]] = {name: [] for name in SEQUENCES}
        for _ in range(rounds):
            alone = replay(None, [])
            cost = {}
            for name, (_, watched) in SEQUENCES.items():
                streams = [_Stream(client, specs[stream]) for stream in watched]
                try:
                    cost[name] = replay(jobs[name], streams) - alone
                finally:
                    for stream in streams:
                        stream.close()
            for name in SEQUENCES:
                shares[name].append(cost[name] / cost["polling job"])
                units[name].append(cost[name] / plain_cpu)
    return {"rounds": rounds, "count": count,
            "share": {name: statistics.median(v) for name, v in shares.items()},
            "spread": {name: (min(v), max(v)) for name, v in shares.items()},
            "units": {name: statistics.median(v) for name, v in units.items()}}


def _polling(client: pymongo.MongoClient[dict[str, Any]]) -> Job:
    db = client.msgstatus

    def job(mid: ObjectId, cid: ObjectId) -> None:
        baseline_polling.decide(client, db, mid, lambda message, communication: None)  # no emit: no database work
        baseline_polling.reset_flag(db, mid)
    return job


def _msgstatus(db: Any) -> Job:
    def job(mid: ObjectId, cid: ObjectId) -> None:
        claim = messages.claim(db, mid, "floor", 60, lambda holder: True)
        if not isinstance(claim, messages.Claim):
            raise RuntimeError(f"message {mid} could not be claimed: {claim}")
        decisions.write(db, decisions.decision(claim.message, "floor", _log(mid, cid), messages.now()))
    return job


def _least(db: Any) -> Job:
    def job(mid: ObjectId, cid: ObjectId) -> None:
        message = message_doc(mid)
        decided = decisions.decision(message, "floor", _log(mid, cid), messages.now())
        unclaimed = {k: v for k, v in decided.filter.items() if k != f"{messages.CLAIM}.token"}
        db[messages.MESSAGES].update_one(unclaimed, decided.change)
    return job


def _log(mid: ObjectId, cid: ObjectId) -> dict[str, Any]:
    return {**comm_doc(mid), "_id": cid}


def floor_lines(floor: dict[str, Any] | None) -> list[str]:
    """The cost section's table of the three sequences."""
    if not floor:
        return []
    out = ["", f"One message at a time, replayed ({floor['rounds']} alternating rounds of {floor['count']} messages, "
               "median; `bench/floor.py` says what each sequence sends and why the last is the least):", "",
           "| sequence | commands / message | server CPU / message (plain updates) | against the polling job "
           "| rounds' range |", "|---|---|---:|---:|---|"]
    for name, (commands, _) in SEQUENCES.items():
        low, high = floor["spread"][name]
        out.append(f"| {name} | {commands} | {floor['units'][name]:.2f} | **{floor['share'][name]:.2f}x** "
                   f"| {low:.2f} to {high:.2f} |")
    return out
