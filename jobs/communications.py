"""The communication logs, as the seed reads them: which log decides a message, and what it says."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.database import Database

from jobs.messages import COMMUNICATIONS, KIND, MESSAGES

MONGOOSE_TRUE = frozenset({True, "true", "1", "yes"})
"""What a Mongoose Boolean field casts to true (its convertToTrue, in which 1 is True); any other value it
casts to false or leaves unset, and the seed's ``if (communication._doc.success)`` decides not delivered."""


def is_delivery(success: Any) -> bool:
    """The seed's test of a log's ``success``, as Mongoose casts it (case-sensitive: "TRUE" is not true)."""
    # Numbers compare by value, as in JavaScript (1.0 and Int64(1) are 1); other types are never true.
    return isinstance(success, bool | int | float | str) and success in MONGOOSE_TRUE


def communication_for(db: Database, message_id: ObjectId) -> dict[str, Any] | None:  # type: ignore[type-arg]
    """The message's communication log: a successful one if any, else the latest."""
    return communications_for(db, [message_id]).get(message_id)


def disagreement(message: dict[str, Any], communication: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a decided message's log now says otherwise: ``{delivered, communication_id}`` (else None)."""
    if "delivered" not in message or communication is None:
        return None
    says = is_delivery(communication.get("success"))
    return None if says == message["delivered"] else {"delivered": says, "communication_id": communication["_id"]}


def late_change(db: Database, message_id: ObjectId) -> dict[str, Any] | None:  # type: ignore[type-arg]
    """For a decided tracked-kind message, what its log now says where that differs from the decision."""
    message = db[MESSAGES].find_one({"_id": message_id, **KIND, "delivered": {"$exists": True}}, {"delivered": 1})
    return disagreement(message, communication_for(db, message_id)) if message is not None else None


def communications_for(db: Database, message_ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:  # type: ignore[type-arg]
    """Each message's communication log (a successful one if any, else the latest), in one query."""
    if not message_ids:
        return {}
    found: dict[ObjectId, list[dict[str, Any]]] = {}
    for log in db[COMMUNICATIONS].find(_naming(message_ids)):
        named = log["conv_message_id"]
        found.setdefault(named if isinstance(named, ObjectId) else ObjectId(named), []).append(log)
    return {oid: deciding(logs) for oid, logs in found.items()}


def deciding(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a message's logs (at least one), the one the seed decides on: the latest successful one if any,
    else the latest."""
    successful = [log for log in logs if is_delivery(log.get("success"))]
    return max(successful or logs, key=lambda log: log["_id"])


def with_communication(db: Database, message_ids: list[ObjectId]) -> set[ObjectId]:  # type: ignore[type-arg]
    """Those of ``message_ids`` that some communication log names (by ObjectId or 24-hex string)."""
    if not message_ids:
        return set()
    found = db[COMMUNICATIONS].find(_naming(message_ids), {"conv_message_id": 1, "_id": 0})
    named = {doc["conv_message_id"] for doc in found}
    return {oid for oid in message_ids if oid in named or str(oid) in named}


def _naming(message_ids: list[ObjectId]) -> dict[str, Any]:
    """The logs that name any of ``message_ids``: some writers store the id as its 24-hex string."""
    return {"conv_message_id": {"$in": [*message_ids, *map(str, message_ids)]}}
