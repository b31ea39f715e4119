"""Resume tokens and operation times that belong to one server process.

mongoeco numbers its change events 1, 2, 3... afresh in every process, so a
bare event number from before a restart would silently resume at the wrong
place. Every token this server hands out therefore carries a random instance
id; a token with another instance id is answered with ChangeStreamHistoryLost.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from mongoeco.errors import OperationFailure
from mongoeco.types import Timestamp

CHANGE_STREAM_HISTORY_LOST = 286
"""MongoDB's code for a resume point the server no longer has."""

_TOKEN_HEX_DIGITS = 32

HIGH_WATER = 1 << 63
"""The bit that tells a position's token (a ``postBatchResumeToken``) from an event's."""


def history_lost(reason: str) -> OperationFailure:
    """The error MongoDB answers when a change stream cannot resume."""
    return OperationFailure(f"cannot resume change stream: {reason}", code=CHANGE_STREAM_HISTORY_LOST)


@dataclass(frozen=True)
class TokenCodec:
    """Turns mongoeco event numbers into tokens tied to this process, and back."""

    instance: int = field(default_factory=lambda: secrets.randbits(64))
    started: int = field(default_factory=lambda: int(time.time()))

    def token(self, event: int, high_water: bool = False) -> dict[str, str]:
        """The resume token (``{"_data": hex}``) for mongoeco event number ``event``: the event's own, or
        (``high_water``) a batch's ``postBatchResumeToken``, a position after that event, not the event."""
        return {"_data": f"{self.instance:016x}{event | (HIGH_WATER if high_water else 0):016x}"}

    def high_water(self, token: object) -> bool:
        """Whether ``token`` (one of ours) marks a position rather than an event."""
        return bool(int(token["_data"][16:], 16) & HIGH_WATER) if isinstance(token, dict) else False

    def event(self, token: object) -> int:
        """The event number in ``token``, or ChangeStreamHistoryLost if not ours."""
        data = token.get("_data") if isinstance(token, dict) else None
        if not isinstance(data, str) or len(data) != _TOKEN_HEX_DIGITS:
            raise history_lost("the resume token was not issued by this server")
        try:
            instance, event = int(data[:16], 16), int(data[16:], 16)
        except ValueError:
            raise history_lost("the resume token was not issued by this server") from None
        if instance != self.instance:
            raise history_lost("the resume token predates a restart of this in-memory server")
        return event & ~HIGH_WATER

    def timestamp(self, event: int) -> Timestamp:
        """The cluster time reported for event number ``event``."""
        return Timestamp(self.started, event)

    def event_at(self, operation_time: object) -> int | None:
        """The first event number at ``operation_time``; None means "from now"."""
        if not isinstance(operation_time, Timestamp):
            raise OperationFailure("startAtOperationTime must be a BSON timestamp", code=14)
        if operation_time.time < self.started:
            raise history_lost("startAtOperationTime predates this in-memory server")
        if operation_time.time > self.started:
            return None
        return operation_time.inc
