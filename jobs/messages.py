"""The two collections, as the seed has them, and the status job's writes to them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.database import Database

MESSAGES = "support_messages"
COMMUNICATIONS = "communications"
CLAIM = "status_claim"
"""Field holding a worker's lease on a message: {token, until}."""

HOLD = "status_hold"
"""Field marking a message the sweep leaves alone: {kind: "retry", until, since, attempts, error} while it
waits for its next slow retry, {kind: "parked", since, error} when its data needs an operator, {kind:
"no_log", retired} once it has waited for its log past LOG_HORIZON (an event still decides it)."""

RETIRED = "no_log"
"""The hold kind of a message past LOG_HORIZON without a log: only its log's event or a full sweep looks."""

DECIDED_AT = "status_decided_at"
"""When msgstatus wrote the message's decision."""

SEED_FLAG = "status_queue_in_progress"
"""The polling job's lock flag: a decision removes it, so no document keeps a stale one."""

SOURCES = ("sms", "email")

KIND: dict[str, Any] = {"sender_type": "conversation", "source": {"$in": list(SOURCES)}}
"""The messages msgstatus is about: from a conversation, by sms or email."""

TRACKED: dict[str, Any] = {**KIND, "delivered": {"$exists": False}}
"""A message msgstatus decides: from a conversation, by sms or email, not yet decided."""

ERROR_SHOWN = 300
"""Characters of an error kept on a held message."""


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored date as an aware UTC one (a client without ``tz_aware`` reads them naive)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def unclaimed(at: datetime) -> dict[str, Any]:
    """No claim, or a claim whose lease has run out."""
    return {"$or": [{CLAIM: {"$exists": False}}, {f"{CLAIM}.until": {"$lt": at}}]}


def sweepable() -> dict[str, Any]:
    """Tracked and not held: what a sweep looks at first (the compound index skips held and retired ones)."""
    return {**TRACKED, HOLD: {"$exists": False}}


def retired() -> dict[str, Any]:
    """Tracked messages retired past LOG_HORIZON without a log (the ``status_hold.kind`` index finds them)."""
    return {**TRACKED, f"{HOLD}.kind": RETIRED}


def retire(db: Database, message_ids: list[ObjectId], at: datetime) -> int:  # type: ignore[type-arg]
    """Keep the regular sweeps off these messages, past LOG_HORIZON without a log; how many were retired.

    A claimed message is left alone (its job decides what becomes of it); an event still claims and decides
    a retired one, as the claim ignores holds.
    """
    if not message_ids:
        return 0
    result = db[MESSAGES].update_many(
        {"_id": {"$in": message_ids}, **sweepable(), **unclaimed(at)},
        {"$set": {HOLD: {"kind": RETIRED, "retired": at}}},
    )
    return result.modified_count


def within(message: dict[str, Any], since: datetime) -> bool:
    """Whether the message's ``created`` is a date no older than ``since`` (within LOG_HORIZON)."""
    created = message.get("created")
    return isinstance(created, datetime) and as_utc(created) >= since


def due(at: datetime) -> dict[str, Any]:
    """Tracked, unclaimed messages whose slow retry has come."""
    return {**TRACKED, f"{HOLD}.until": {"$lte": at}, **unclaimed(at)}


@dataclass(frozen=True)
class Claim:
    """Our lease on a message; ``taken_over`` when it replaced a dead or expired claim; the message as found."""

    token: str
    taken_over: bool
    message: dict[str, Any]

    @property
    def hold(self) -> dict[str, Any] | None:
        return self.message.get(HOLD)

    @property
    def slow_retry(self) -> bool:
        return waits_for_slow_retry(self.hold)


def waits_for_slow_retry(hold: dict[str, Any] | None) -> bool:
    """A message held this way gets one attempt, then waits again."""
    return bool(hold) and hold.get("kind") == "retry"  # type: ignore[union-attr]


LEASED = "leased"
"""claim()'s answer when another live job holds the message."""


def new_token() -> str:
    return uuid.uuid4().hex


def claim(
    db: Database,  # type: ignore[type-arg]
    message_id: ObjectId,
    token: str,
    ttl: float,
    alive: Callable[[str], bool],
) -> Claim | str | None:
    """Lease a tracked message for ``ttl`` seconds under ``token``: our Claim (with the message as it was
    found), LEASED while another live job holds it, or None if decided or not tracked. A claim whose job
    is dead is taken over."""
    at = now()
    lease = {CLAIM: {"token": token, "until": at + timedelta(seconds=ttl)}}
    before = db[MESSAGES].find_one_and_update({"_id": message_id, **TRACKED, **unclaimed(at)}, {"$set": lease})
    if before is None:
        current = db[MESSAGES].find_one({"_id": message_id, **TRACKED}, {f"{CLAIM}.token": 1})
        if current is None:
            return None
        holder = (current.get(CLAIM) or {}).get("token")
        if holder is None or alive(holder):
            return LEASED
        before = db[MESSAGES].find_one_and_update(
            {"_id": message_id, **TRACKED, f"{CLAIM}.token": holder}, {"$set": lease}
        )
        if before is None:
            return LEASED
    return Claim(token, taken_over=CLAIM in before, message=before)


def claim_many(
    db: Database, message_ids: list[ObjectId], token: str, ttl: float,  # type: ignore[type-arg]
) -> dict[ObjectId, dict[str, Any]]:
    """Lease every free tracked message of ``message_ids`` under ``token``, each on its own lease: the ones
    we got, as they are under our claim (two round trips for the lot)."""
    at = now()
    lease = {CLAIM: {"token": token, "until": at + timedelta(seconds=ttl)}}
    db[MESSAGES].update_many({"_id": {"$in": message_ids}, **TRACKED, **unclaimed(at)}, {"$set": lease})
    return {doc["_id"]: doc for doc in db[MESSAGES].find({"_id": {"$in": message_ids}, f"{CLAIM}.token": token})}


def under_claim(db: Database, message_id: ObjectId, token: str) -> dict[str, Any] | None:  # type: ignore[type-arg]
    """The message as it is now, if still tracked and under our claim ``token``."""
    return db[MESSAGES].find_one({"_id": message_id, **TRACKED, f"{CLAIM}.token": token})


def release_many(db: Database, message_ids: list[ObjectId], token: str) -> None:  # type: ignore[type-arg]
    """Give up our leases on these messages."""
    if message_ids:
        db[MESSAGES].update_many({"_id": {"$in": message_ids}, f"{CLAIM}.token": token}, {"$unset": {CLAIM: ""}})


def tracked_among(db: Database, message_ids: list[ObjectId]) -> list[ObjectId]:  # type: ignore[type-arg]
    """Those of ``message_ids`` still tracked (undecided)."""
    if not message_ids:
        return []
    return [doc["_id"] for doc in db[MESSAGES].find({"_id": {"$in": message_ids}, **TRACKED}, {"_id": 1})]


def ours_or_free(token: str) -> dict[str, Any]:
    """Our claim, or none (ours ran out and nobody took the message)."""
    return {f"{CLAIM}.token": {"$in": [token, None]}}


def release(db: Database, message_id: ObjectId, token: str) -> None:  # type: ignore[type-arg]
    """Give up our lease (only ours: a later claimant's stays)."""
    db[MESSAGES].update_one({"_id": message_id, f"{CLAIM}.token": token}, {"$unset": {CLAIM: ""}})


def hold(
    db: Database,  # type: ignore[type-arg]
    message_id: ObjectId,
    token: str,
    until: datetime,
    attempts: int,
    error: str,
) -> bool:
    """Release our claim and keep the sweep off the message until ``until``; False if it was decided or
    another job holds it."""
    result = db[MESSAGES].update_one(
        {"_id": message_id, **TRACKED, **ours_or_free(token)},
        {
            "$set": {f"{HOLD}.kind": "retry", f"{HOLD}.until": until, f"{HOLD}.error": error[:ERROR_SHOWN]},
            "$inc": {f"{HOLD}.attempts": attempts},
            "$min": {f"{HOLD}.since": now()},
            "$unset": {CLAIM: ""},
        },
    )
    return result.modified_count == 1


def park(db: Database, message_id: ObjectId, token: str, error: str) -> None:  # type: ignore[type-arg]
    """Release our claim and keep every sweep off the message: its data needs an operator."""
    db[MESSAGES].update_one(
        {"_id": message_id, **TRACKED, **ours_or_free(token)},
        {"$set": {HOLD: {"kind": "parked", "since": now(), "error": error[:ERROR_SHOWN]}}, "$unset": {CLAIM: ""}},
    )


def parked(
    db: Database, message_ids: list[ObjectId] | None = None, limit: int = 0,  # type: ignore[type-arg]
) -> list[ObjectId]:
    """The parked messages (of ``message_ids``, if given), oldest first; at most ``limit`` (0: all)."""
    query: dict[str, Any] = {**TRACKED, f"{HOLD}.kind": "parked"}
    if message_ids is not None:
        query["_id"] = {"$in": message_ids}
    found = db[MESSAGES].find(query, {"_id": 1}).sort(f"{HOLD}.since", 1).limit(limit)
    return [doc["_id"] for doc in found]


def unpark(db: Database, message_ids: list[ObjectId]) -> int:  # type: ignore[type-arg]
    """Let sweeps find these messages again (an operator requeued their jobs); how many were parked."""
    result = db[MESSAGES].update_many(
        {"_id": {"$in": message_ids}, **TRACKED, f"{HOLD}.kind": "parked"}, {"$unset": {HOLD: ""}}
    )
    return result.modified_count


def wake(db: Database, at: datetime) -> int:  # type: ignore[type-arg]
    """Make every message waiting for a slow retry due now; how many."""
    result = db[MESSAGES].update_many(
        {**TRACKED, f"{HOLD}.until": {"$gt": at}}, {"$set": {f"{HOLD}.until": at}}
    )
    return result.modified_count


def inserted_at(document: dict[str, Any]) -> datetime:
    """When a document was written: its ``createdAt``/``created`` date, else its ObjectId's time
    (whole seconds only)."""
    for name in ("createdAt", "created"):
        value = document.get(name)
        if isinstance(value, datetime):
            return as_utc(value)
    oid = document.get("_id")
    return oid.generation_time if isinstance(oid, ObjectId) else now()


def ensure_indexes(db: Database) -> None:  # type: ignore[type-arg]
    """The indexes the job and the sweep rely on (idempotent)."""
    db[COMMUNICATIONS].create_index("conv_message_id")
    db[MESSAGES].create_index("delivered")
    db[MESSAGES].create_index("created")
    # Undecided and not held: held messages cost a sweep nothing, however many there are.
    db[MESSAGES].create_index([("delivered", 1), (HOLD, 1)])
    db[MESSAGES].create_index(f"{HOLD}.until")
    db[MESSAGES].create_index(f"{HOLD}.kind")
