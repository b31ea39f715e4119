"""What ``make chaos`` writes and what it watches: steady traffic, decisions seen, emits received."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import PyMongoError

from msgstatus.receiver import Emit, SocketReceiver


@dataclass
class Message:
    """One message the traffic wrote, and what became of its communication log."""

    written: float
    epoch: int
    """Database generation: the embedded server restarts empty, so messages of an old epoch are gone."""
    with_log: bool = False
    tagged: bool = False
    """Another writer set ``metadata.tag`` while msgstatus was deciding it."""


@dataclass
class Ledger:
    """Everything written and seen, shared by the traffic, the observer and the checks."""

    messages: dict[ObjectId, Message] = field(default_factory=dict)
    decided: dict[str, list[float]] = field(default_factory=dict)
    """Message id -> times the observer saw ``delivered`` being set (more than one is a double decision)."""
    emits: list[Emit] = field(default_factory=list)
    write_errors: int = 0
    epoch: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_emit(self, emit: Emit) -> None:
        with self.lock:
            self.emits.append(emit)

    def emit_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(e.message_id for e in self.emits)

    def written_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for m in self.messages.values() if m.epoch == self.epoch and start <= m.written <= end)

    def last_decision(self, until: float) -> float:
        """When the last of the messages with a log written before ``until`` was first seen decided."""
        with self.lock:
            times = [self.decided[str(mid)][0] for mid, m in self.messages.items()
                     if m.with_log and m.epoch == self.epoch and m.written <= until and str(mid) in self.decided]
        return max(times, default=until)

    def worst_delay(self, start: float, end: float) -> float:
        """Longest wait from log to decision of a message with its log written between ``start`` and ``end``."""
        with self.lock:
            delays = [self.decided[str(mid)][0] - m.written for mid, m in self.messages.items()
                      if m.with_log and m.epoch == self.epoch and start <= m.written <= end
                      and str(mid) in self.decided]
        return max(delays, default=0.0)

    def pending(self, until: float, epoch: int | None = None) -> list[ObjectId]:
        """Messages with a log, written before ``until``, that no one has seen decided yet."""
        epoch = self.epoch if epoch is None else epoch
        with self.lock:
            return [mid for mid, m in self.messages.items()
                    if m.with_log and m.epoch == epoch and m.written <= until and str(mid) not in self.decided]


class Traffic(threading.Thread):
    """Writes message + communication pairs at ``rate`` per second until stopped.

    A fifth of the logs come first, a tenth say the provider failed, a tenth of the
    messages never get a log, and a third get ``metadata.tag`` from another writer
    right after the message (to catch a job that overwrites others' metadata).
    Writes that fail (the database is restarting) are counted and not tracked.
    """

    def __init__(self, db: Any, ledger: Ledger, rate: float) -> None:
        super().__init__(daemon=True, name="traffic")
        self.db, self.ledger, self.rate = db, ledger, rate
        self.stopping = threading.Event()
        self.paused = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            if not self.paused.is_set():
                self.write_one()
            self.stopping.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def burst(self, count: int) -> None:
        """``count`` pairs as fast as the database takes them."""
        for _ in range(count):
            self.write_one()

    def write_one(self) -> None:
        mid, epoch = ObjectId(), self.ledger.epoch
        message = {"_id": mid, "sender_type": "conversation", "sender_id": ObjectId(),
                   "source": random.choice(("sms", "email")), "content": "chaos",
                   "created": datetime.now(UTC), "metadata": {"agent": "chaos"}}
        comm = {"conv_message_id": mid, "account_id": ObjectId(), "success": random.random() > 0.1}
        kind = random.random()
        try:
            if kind < 0.2:
                self.db.communications.insert_one(comm)
                self._record(mid, epoch, with_log=False)
                self.db.support_messages.insert_one(message)
                self._record(mid, epoch, with_log=True)
                return
            self.db.support_messages.insert_one(message)
            self._record(mid, epoch, with_log=False)
            if random.random() < 0.33:
                self.db.support_messages.update_one({"_id": mid}, {"$set": {"metadata.tag": "other-writer"}})
                self.ledger.messages[mid].tagged = True
            if kind < 0.9:
                self.db.communications.insert_one(comm)
                self._record(mid, epoch, with_log=True)
        except PyMongoError:
            with self.ledger.lock:
                self.ledger.write_errors += 1
                # A comm-first log whose message failed is not a tracked message at all.
                self.ledger.messages.pop(mid, None) if kind < 0.2 else None

    def _record(self, mid: ObjectId, epoch: int, with_log: bool) -> None:
        with self.ledger.lock:
            entry = self.ledger.messages.setdefault(mid, Message(time.time(), epoch))
            entry.with_log = with_log
            if with_log:
                entry.written = time.time()


class Observer(threading.Thread):
    """Sees each ``delivered`` being set, through a change stream of its own (reopened after errors)."""

    def __init__(self, mongo_url: str, database: str, ledger: Ledger) -> None:
        super().__init__(daemon=True, name="observer")
        self.mongo_url, self.database, self.ledger = mongo_url, database, ledger
        self.decisions: dict[str, tuple[Any, Any]] = {}
        self.stopping = threading.Event()
        self.watching = threading.Event()
        """Set once its first stream is open: a decision made before would never be seen."""

    def run(self) -> None:
        with pymongo.MongoClient[dict[str, Any]](self.mongo_url, serverSelectionTimeoutMS=2000) as client:
            collection = client[self.database].support_messages
            reopened = False
            while not self.stopping.is_set():
                try:
                    with collection.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
                        if reopened:  # once the new stream is open, nothing decided from now on is missed
                            self._reconcile(collection, self.ledger.pending(time.time()))
                        reopened = True
                        self.watching.set()
                        while not self.stopping.is_set():
                            change = stream.try_next()
                            if change is not None:
                                self._see(change)
                except PyMongoError:
                    self.stopping.wait(0.1)

    def _see(self, change: dict[str, Any]) -> None:
        # The embedded server's update events carry no updateDescription (mongoeco leaves it out), so
        # look at the document after the update: a changed decision is a second decision.
        self._note(change.get("fullDocument") or {})

    def _reconcile(self, collection: Any, ids: list[ObjectId]) -> None:
        """Note decisions made while the stream was down, at the time of this look (an upper bound).

        Only after a reconnection: looking up hundreds of ids every moment would load the
        one-core embedded server enough to slow the service it measures.
        """
        for document in collection.find({"_id": {"$in": ids}, "delivered": {"$exists": True}}):
            self._note(document)

    def _note(self, document: dict[str, Any]) -> None:
        if "delivered" not in document:
            return
        decision = (document["delivered"], document.get("metadata", {}).get("communication_id"))
        mid = str(document["_id"])
        with self.ledger.lock:
            seen = self.ledger.decided.setdefault(mid, [])
            if not seen or self.decisions.get(mid) != decision:
                seen.append(time.time())
                self.decisions[mid] = decision


class Socket:
    """The socket receiver, replaceable on the same port (to be unreachable for a while)."""

    def __init__(self, receiver: SocketReceiver, ledger: Ledger) -> None:
        self.receiver, self.ledger = receiver, ledger
        self.port = receiver._server.server_address[1]
        receiver.listeners.append(ledger.on_emit)

    def down(self) -> None:
        self.receiver.stop()

    def up(self) -> None:
        self.receiver = SocketReceiver(self.receiver.secret, port=self.port).start()
        self.receiver.listeners.append(self.ledger.on_emit)

    def stop(self) -> None:
        self.receiver.stop()
