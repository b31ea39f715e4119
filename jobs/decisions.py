"""The seed's decision written to a message: one at a time (findAndModify, which gives the updated message
back), or a wave's at once (one bulk update in one transaction; each updated message is computed from the
message as read under our claim, which no one else may change meanwhile)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import MongoClient, ReturnDocument, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.database import Database

from jobs.messages import CLAIM, DECIDED_AT, HOLD, MESSAGES, SEED_FLAG, is_delivery, now

OBJECT: dict[str, Any] = {"$type": "object", "$not": {"$type": "array"}}
"""A ``metadata`` that is an object (``$type: object`` alone also matches an array holding one)."""

NOT_OBJECT: dict[str, Any] = {"$or": [{"metadata": {"$not": {"$type": "object"}}}, {"metadata": {"$type": "array"}}]}
"""A ``metadata`` that is missing or not an object."""

DROPPED = {"$unset": {CLAIM: "", HOLD: "", SEED_FLAG: ""}}
"""What a decision removes: our claim, any hold, and the polling job's lock flag."""


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


def decide(
    db: Database,  # type: ignore[type-arg]
    message_id: ObjectId,
    token: str,
    communication: dict[str, Any],
    session: ClientSession,
) -> dict[str, Any] | None:
    """Write the seed's decision and drop our claim; the updated message, or None if our lease was lost.

    A delivery sets ``delivered: true`` and ``metadata.communication_id``; a failure sets ``delivered: false``
    and leaves ``metadata`` alone. Both record when (``DECIDED_AT``).
    """
    at = now()
    shapes = ((OBJECT, True), (None, False)) if is_delivery(communication.get("success")) else ((None, True),)
    for metadata, is_object in shapes:
        condition = {"metadata": metadata} if metadata else {}
        updated = db[MESSAGES].find_one_and_update(
            {**_ours(message_id, token), **condition},
            {"$set": _sets(communication, at, is_object), **DROPPED},
            return_document=ReturnDocument.AFTER, session=session,
        )
        if updated is not None:
            return updated
    return None


@dataclass(frozen=True)
class Decision:
    """One message's decision in a wave: its update, and the message as that update leaves it."""

    message_id: ObjectId
    update: UpdateOne
    after: dict[str, Any]


def decision(message: dict[str, Any], token: str, communication: dict[str, Any], at: datetime) -> Decision:
    """The seed's decision of ``message``, read under our claim ``token``, as an update and its result.

    The update also requires ``metadata`` to have the shape it had when read: if it changed, the update
    matches nothing and the message stays undecided (``commit_wave`` counts it).
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
    update = UpdateOne({**_ours(message["_id"], token), **condition}, {"$set": sets, **DROPPED})
    return Decision(message["_id"], update, after)


def commit_wave(client: MongoClient, db: Database, decisions: list[Decision]) -> int:  # type: ignore[type-arg]
    """Write a wave's decisions in one transaction: one bulk update and its commit; how many matched."""
    with client.start_session() as session, session.start_transaction():
        result = db[MESSAGES].bulk_write([d.update for d in decisions], ordered=False, session=session)
    return result.matched_count
