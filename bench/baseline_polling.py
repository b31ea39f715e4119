"""The seed's Support Message Status job, ported to Python on msgstatus's stack, as the baseline.

A faithful port of ``../shared/seeds/000_6268cab6ab2e4497.txt``: every 5 s (with the
cron's in-progress lock) an aggregate for untracked messages newest first, an
``updateMany`` of ``status_queue_in_progress: true``, one RQ job per message (10
attempts, exponential from 1 s) that does ``find_one`` of the communication, the
transactional ``findByIdAndUpdate`` with the seed's data (truthy ``success``, the
whole ``metadata`` replaced) and the emit inside it; the flag is reset when the job
completes or fails for good. Same servers, receiver and worker count as msgstatus.

Left out of the Node original: Mongoose (plain pymongo), Bull (RQ), node-cron's
wall-clock alignment (a sleep loop with the same period), ``removeOnComplete``
(``result_ttl=0``), logging through the shared logger, and the bugs' side effects
beyond what the data shows (e.g. no retry storm monitoring).

Run: ``python -m bench.baseline_polling poll`` (the cron) and ``... work`` (a worker);
both read MONGO_DB_URL, REDIS_URL, APP_SECRET, CONVERSATION_SOCKET.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pymongo
import redis
from bson import ObjectId
from rq import Callback, Queue, Retry, Worker

from jobs.emit import node_json  # the same JSON shape as the Node service writes

QUEUE = "support_message_status_queue"
"""The seed's queue name."""

PERIOD = 5.0
"""The seed's cron: */5 * * * * *."""

_clients: dict[str, Any] = {}


def _db() -> Any:
    if _clients.get("pid") != os.getpid():
        _clients.update(
            pid=os.getpid(),
            mongo=pymongo.MongoClient(os.environ["MONGO_DB_URL"]),
            http=httpx.Client(timeout=10),
        )
    return _clients["mongo"].get_default_database("msgstatus")


def reset_flag(db: Any, message_id: ObjectId) -> None:
    """The message's status_queue_in_progress back to false."""
    db.support_messages.update_one({"_id": message_id}, {"$set": {"status_queue_in_progress": False}})


def _reset_flag(job: Any, *args: Any) -> None:
    """Bull's 'completed' and final 'failed' handlers."""
    reset_flag(_db(), ObjectId(job.args[0]))


def check_status(message_id: str) -> None:
    """The seed's queue processor."""
    db = _db()
    decide(_clients["mongo"], db, ObjectId(message_id), _emit)


def decide(client: Any, db: Any, oid: ObjectId, during: Callable[[Any, Any], None]) -> None:
    """The processor's lookup and transactional update of one message; ``during`` runs inside the
    transaction with the message as updated and its communication (the seed emits there)."""
    communication = db.communications.find_one({"conv_message_id": oid})
    if communication:
        if communication.get("success"):  # the seed's truthiness
            data = {"metadata": {"communication_id": communication["_id"]}, "delivered": True}
        else:
            data = {"delivered": False}
        with client.start_session() as session, session.start_transaction():
            message = db.support_messages.find_one_and_update(
                {"_id": oid}, {"$set": data}, return_document=pymongo.ReturnDocument.AFTER, session=session
            )
            during(message, communication)


def _emit(message: Any, communication: Any) -> None:
    """The seed's emit: updateMessage with a JWT good for 2 minutes; an error status raises (Bull retries)."""
    token = jwt.encode(
        {"conversation_id": str(message["sender_id"]), "account_id": str(communication["account_id"]),
         "type": "team", "iat": int(time.time()), "exp": int(time.time()) + 120},
        os.environ["APP_SECRET"], algorithm="HS256",
    )
    response = _clients["http"].post(
        f"{os.environ['CONVERSATION_SOCKET']}/emit",
        json={"event": "updateMessage", "data": node_json(message)},
        headers={"Authorization": f"Bearer {token}", "x-account-id": str(communication["account_id"])},
    )
    response.raise_for_status()


def poll_once(db: Any, queue: Queue) -> int:
    """The seed's service: find untracked messages, flag them, add one job each."""
    messages = list(db.support_messages.aggregate([
        {"$match": {
            "sender_type": "conversation",
            "source": {"$in": ["sms", "email"]},
            "delivered": {"$exists": False},
            "status_queue_in_progress": {"$ne": True},
        }},
        {"$sort": {"created": -1}},
    ]))
    if messages:
        ids = [m["_id"] for m in messages]
        db.support_messages.update_many({"_id": {"$in": ids}}, {"$set": {"status_queue_in_progress": True}})
        for message in messages:
            try:
                queue.enqueue(
                    check_status, str(message["_id"]),
                    retry=Retry(max=9, interval=[2**n for n in range(9)]),
                    result_ttl=0,
                    on_success=Callback(_reset_flag),
                    on_failure=Callback(_reset_flag),
                )
            except Exception:
                db.support_messages.update_one({"_id": message["_id"]}, {"$set": {"status_queue_in_progress": False}})
    return len(messages)


def poll_forever() -> None:
    """The cron, with its in-progress lock (one poll at a time, every PERIOD seconds)."""
    db = _db()
    queue = Queue(QUEUE, connection=redis.Redis.from_url(os.environ["REDIS_URL"]))
    while True:
        started = time.monotonic()
        poll_once(db, queue)
        time.sleep(max(0.0, PERIOD - (time.monotonic() - started)))


def work(simple: bool = False) -> None:
    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    from rq import SimpleWorker

    worker_class = SimpleWorker if simple else Worker
    worker_class([Queue(QUEUE, connection=connection)], connection=connection).work(
        with_scheduler=True, logging_level="WARNING"
    )


if __name__ == "__main__":
    # Through the importable module, so that jobs name bench.baseline_polling.check_status, not __main__.
    import bench.baseline_polling as baseline

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "poll":
        baseline.poll_forever()
    elif command == "work":
        baseline.work(simple="--simple" in sys.argv)
    else:
        sys.exit("usage: python -m bench.baseline_polling poll | work [--simple]")
