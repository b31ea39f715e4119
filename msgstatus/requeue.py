"""``msgstatus requeue --parked``: parked messages back on the queue, found in MongoDB.

A message is parked in MongoDB for as long as its data needs an operator; the failed job that names
it in RQ's registry expires after a week. So this looks in MongoDB, whenever it is run.
"""

from __future__ import annotations

from typing import Any

import redis
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from jobs import messages
from jobs.queueing import Enqueuer, status_queue


def requeue_parked(connection: redis.Redis, db: Database, ids: list[str]) -> dict[str, Any]:  # type: ignore[type-arg]
    """Unpark every parked message (or those of ``ids``) and give each a fresh job; what was done, and
    which of ``ids`` were not parked (bad ids, unknown, decided, or never parked)."""
    wanted: list[ObjectId] | None = None
    bad = []
    if ids:
        wanted = []
        for raw in ids:
            try:
                wanted.append(ObjectId(raw))
            except (InvalidId, TypeError):
                bad.append(raw)
    found = messages.parked(db, wanted)
    messages.unpark(db, found)  # first: the fresh job must not find the message held
    enqueuer = Enqueuer(status_queue(connection))
    for oid in found:
        enqueuer.requeue(str(oid))
    missed = [str(oid) for oid in wanted or [] if oid not in found]
    return {"requeued": len(found), "messages": [str(oid) for oid in found], "not_parked": bad + missed}
