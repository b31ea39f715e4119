"""Documents shaped like the seed's support_messages and communications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.database import Database


def message(db: Database, **fields: Any) -> ObjectId:
    """Insert a tracked message (from a conversation, by sms) unless ``fields`` say otherwise."""
    doc = {
        "sender_type": "conversation",
        "sender_id": ObjectId(),
        "source": "sms",
        "content": "Test message",
        "to": "+1234567890",
        "created": datetime.now(UTC),
        "metadata": {"agent": "a-1"},
        **fields,
    }
    return db.support_messages.insert_one(doc).inserted_id


def communication(db: Database, message_id: Any, **fields: Any) -> ObjectId:
    """Insert the provider's communication log for ``message_id`` (successful unless told)."""
    doc = {
        "conv_message_id": message_id,
        "account_id": ObjectId(),
        "success": True,
        "provider": "twilio",
        "response": {"sid": "SM123"},
        **fields,
    }
    return db.communications.insert_one(doc).inserted_id
