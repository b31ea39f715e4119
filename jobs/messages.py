"""The two collections, as the seed has them, and the status job's writes to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database

MESSAGES = "support_messages"
COMMUNICATIONS = "communications"
CLAIM = "status_claim"
"""Field holding a worker's lease on a message: {token, until}."""

SOURCES = ("sms", "email")

TRACKED: dict[str, Any] = {
    "sender_type": "conversation",
    "source": {"$in": list(SOURCES)},
    "delivered": {"$exists": False},
}
"""A message msgstatus decides: from a conversation, by sms or email, not yet decided."""


def now() -> datetime:
    return datetime.now(UTC)


def unclaimed(at: datetime) -> dict[str, Any]:
    """No claim, or a claim whose lease has run out."""
    return {"$or": [{CLAIM: {"$exists": False}}, {f"{CLAIM}.until": {"$lt": at}}]}


@dataclass(frozen=True)
class Claim:
    """Our lease on a message; ``expired`` when it replaced a crashed worker's lease."""

    token: str
    expired: bool


LEASED = "leased"
"""claim()'s answer when another worker holds a live lease on the message."""


def claim(db: Database, message_id: ObjectId, ttl: float) -> Claim | str | None:  # type: ignore[type-arg]
    """Lease a tracked message for ``ttl`` seconds: our Claim, LEASED, or None if decided or not tracked."""
    token = uuid.uuid4().hex
    at = now()
    before = db[MESSAGES].find_one_and_update(
        {"_id": message_id, **TRACKED, **unclaimed(at)},
        {"$set": {CLAIM: {"token": token, "until": at + timedelta(seconds=ttl)}}},
        projection={CLAIM: 1},
    )
    if before:
        return Claim(token, expired=CLAIM in before)
    return LEASED if db[MESSAGES].find_one({"_id": message_id, **TRACKED}, {"_id": 1}) else None


def release(db: Database, message_id: ObjectId, token: str) -> None:  # type: ignore[type-arg]
    """Give up our lease (only ours: a later claimant's stays)."""
    db[MESSAGES].update_one({"_id": message_id, f"{CLAIM}.token": token}, {"$unset": {CLAIM: ""}})


def communication_for(db: Database, message_id: ObjectId) -> dict[str, Any] | None:  # type: ignore[type-arg]
    """The message's communication log: a successful one if any, else the latest."""
    # Some writers store the id as its 24-hex string.
    logs = list(db[COMMUNICATIONS].find({"conv_message_id": {"$in": [message_id, str(message_id)]}}))
    if not logs:
        return None
    successful = [log for log in logs if log.get("success") is True]
    return max(successful or logs, key=lambda log: log["_id"])


def decide(
    db: Database,  # type: ignore[type-arg]
    message_id: ObjectId,
    token: str,
    communication: dict[str, Any],
    session: ClientSession,
) -> dict[str, Any] | None:
    """Set delivered and metadata.communication_id and drop our claim; the updated message, or None if
    our lease was lost meanwhile."""
    return db[MESSAGES].find_one_and_update(
        {"_id": message_id, f"{CLAIM}.token": token, "delivered": {"$exists": False}},
        {
            "$set": {
                # Only the boolean true is a success: the seed's truthiness took "false" for one.
                "delivered": communication.get("success") is True,
                "metadata.communication_id": communication["_id"],
            },
            "$unset": {CLAIM: ""},
        },
        return_document=ReturnDocument.AFTER,
        session=session,
    )


def with_communication(db: Database, message_ids: list[ObjectId]) -> set[ObjectId]:  # type: ignore[type-arg]
    """Those of ``message_ids`` that some communication log names (by ObjectId or 24-hex string)."""
    keys: list[Any] = [*message_ids, *map(str, message_ids)]
    found = db[COMMUNICATIONS].find({"conv_message_id": {"$in": keys}}, {"conv_message_id": 1, "_id": 0})
    named = {doc["conv_message_id"] for doc in found}
    return {oid for oid in message_ids if oid in named or str(oid) in named}


def inserted_at(document: dict[str, Any]) -> datetime:
    """When a document was written: its ``createdAt``/``created`` date, else its ObjectId's time
    (whole seconds only)."""
    for name in ("createdAt", "created"):
        value = document.get(name)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
    oid = document.get("_id")
    return oid.generation_time if isinstance(oid, ObjectId) else now()


def ensure_indexes(db: Database) -> None:  # type: ignore[type-arg]
    """The indexes the job and the sweep rely on (idempotent)."""
    db[COMMUNICATIONS].create_index("conv_message_id")
    db[MESSAGES].create_index("delivered")
    db[MESSAGES].create_index("created")
