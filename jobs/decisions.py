"""The seed's decision written to a message, after its emit: alone (one single-document update, atomic by
itself), or a wave's at once (one bulk update in one transaction). Each update is computed from the message
as read under our claim and is conditioned on that claim and on ``metadata``'s shape as read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bson import ObjectId
from pymongo import MongoClient, UpdateOne
from pymongo.database import Database

from core import metrics
from jobs import context, messages
from jobs.communications import is_delivery
from jobs.emit import emit_update
from jobs.errors import BadMessage, RetryableError
from jobs.messages import CLAIM, DECIDED_AT, HOLD, MESSAGES, SEED_FLAG

OBJECT: dict[str, Any] = {"$type": "object", "$not": {"$type": "array"}}
"""A ``metadata`` that is an object (``$type: object`` alone also matches an array holding one)."""

NOT_OBJECT: dict[str, Any] = {"$or": [{"metadata": {"$not": {"$type": "object"}}}, {"metadata": {"$type": "array"}}]}
"""A ``metadata`` that is missing or not an object."""

DROPPED = {"$unset": {CLAIM: "", HOLD: "", SEED_FLAG: ""}}
"""What a decision removes: our claim, any hold, and the polling job's lock flag."""

Written = Literal["delivered", "undelivered", "skipped"]
"""What became of one message's decision: written, or not ours to write any more."""

RESHAPES = 2
"""Times a decision is made again, in one attempt, because ``metadata`` changed shape while it was emitted."""


def _ours(message_id: ObjectId, token: str) -> dict[str, Any]:
    return {"_id": message_id, "delivered": {"$exists": False}, f"{CLAIM}.token": token}


def _sets(communication: dict[str, Any], at: datetime, metadata_is_object: bool) -> dict[str, Any]:
    """The ``$set`` of the seed's decision: a delivery also names its log in ``metadata`` (a missing or
    non-object ``metadata`` becomes ``{communication_id}``, as the seed's update made it)."""
    delivered = is_delivery(communication.get("success"))
    sets: dict[str, Any] = {"delivered": delivered, DECIDED_AT: at}
    if delivered:
        cid = communication["_id"]
        if metadata_is_object:
            sets["metadata.communication_id"] = cid
        else:
            sets["metadata"] = {"communication_id": cid}
    return sets


@dataclass(frozen=True)
class Decision:
    """One message's decision: its update (a filter and a change), and the message as that update leaves it."""

    message_id: ObjectId
    filter: dict[str, Any]
    change: dict[str, Any]
    after: dict[str, Any]

    @property
    def update(self) -> UpdateOne:
        return UpdateOne(self.filter, self.change)


def decision(message: dict[str, Any], token: str, communication: dict[str, Any], at: datetime) -> Decision:
    """The seed's decision of ``message``, read under our claim ``token``, as an update and its result.

    The update also requires ``metadata`` to have the shape it had when read: if it changed, the update
    matches nothing and the message stays undecided (``write`` and ``commit_wave`` tell).
    """
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # stored to the millisecond
    metadata = message.get("metadata")
    sets = _sets(communication, at, isinstance(metadata, dict))
    after = {k: v for k, v in message.items() if k not in DROPPED["$unset"]}
    for key, value in sets.items():
        if key == "metadata.communication_id":
            after["metadata"] = {**metadata, "communication_id": value}  # type: ignore[dict-item]
        else:
            after[key] = value
    condition: dict[str, Any] = {}
    if "metadata.communication_id" in sets:
        condition = {"metadata": OBJECT}
    elif "metadata" in sets:
        condition = NOT_OBJECT
    return Decision(message["_id"], {**_ours(message["_id"], token), **condition}, {"$set": sets, **DROPPED}, after)


def write(db: Database, decided: Decision) -> bool:  # type: ignore[type-arg]
    """Write one message's decision (a retryable single-document update); whether it matched (if not, our
    lease was lost or ``metadata`` changed shape since it was read)."""
    return db[MESSAGES].update_one(decided.filter, decided.change).matched_count == 1


def commit_wave(client: MongoClient, db: Database, decisions: list[Decision]) -> int:  # type: ignore[type-arg]
    """Write a wave's decisions in one transaction: one bulk update and its commit; how many matched."""
    with client.start_session() as session, session.start_transaction():
        result = db[MESSAGES].bulk_write([d.update for d in decisions], ordered=False, session=session)
    return result.matched_count


def decide_and_emit(oid: ObjectId, token: str, message: dict[str, Any], communication: dict[str, Any]) -> Written:
    """Under our claim: emit the seed's decision of ``message`` (as read under the claim), then write it.

    The write is one single-document update conditioned on our claim, so the message is decided only
    after its emit, and only by us; a failed emit leaves it undecided, as the seed's emit before its
    commit did. If ``metadata`` changed shape while it was emitted, the message is decided again as it
    now is (the same idempotency key).
    """
    res = context.resources()
    for _ in range(RESHAPES + 1):
        decided = emitted(oid, token, message, communication)
        if write(res.db, decided):
            observe_emitted(communication)
            return "delivered" if decided.after["delivered"] else "undelivered"
        current = messages.under_claim(res.db, oid, token)
        if current is None:
            return "skipped"  # our lease ran out and another worker took the message
        message = current
    raise RetryableError(f"message {oid}: its metadata changed shape {RESHAPES + 1} times while it was decided")


def emitted(oid: ObjectId, token: str, message: dict[str, Any], communication: dict[str, Any]) -> Decision:
    """The seed's decision of ``message`` (read under our claim ``token``), emitted and not yet written;
    BadMessage, before any emit, if the log names no account or the message no conversation."""
    res = context.resources()
    account_id = account_of(oid, communication)
    require_sender(oid, message)
    decided = decision(message, token, communication, messages.now())
    emit_update(res.http, res.settings.require_socket(), decided.after, account_id, res.settings.app_secret,
                communication["_id"])
    return decided


def observe_emitted(communication: dict[str, Any]) -> None:
    """Count how long after its log's insert a message's decision was emitted and written."""
    since_log = messages.now() - messages.inserted_at(communication)
    metrics.INSERT_TO_EMIT.observe(context.resources().redis, since_log.total_seconds())


def account_of(oid: ObjectId, communication: dict[str, Any]) -> str:
    """The account the emit is made for; BadMessage if the log names none."""
    account_id = communication.get("account_id")
    if account_id is None:
        raise BadMessage(f"communication {communication['_id']} for message {oid} has no account_id")
    return str(account_id)


def require_sender(oid: ObjectId, message: dict[str, Any]) -> None:
    """BadMessage if the message names no conversation (its ``sender_id``) to notify."""
    if message.get("sender_id") is None:
        raise BadMessage(f"message {oid} has no sender_id: no conversation to notify")
