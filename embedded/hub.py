"""mongoeco's change hub with event numbering that survives direct publishes.

mongoeco delivers most changes in commit-sequence order and drops any whose
sequence is below the hub's next event number, as a duplicate. But some events
(a dropped database, for one) are published directly and take an event number
that no commit sequence accounts for; every later commit then looks like a
duplicate until the sequences catch up, and those inserts never reach a change
stream. Found here: after ``drop_database`` the next insert was never seen.
This hub keeps its own event numbers and tracks delivered commit sequences
separately, so the duplicate check compares sequences with sequences. Only a
document change (insert, update, replace, delete) completes the delivery of a
commit sequence: a direct publish, such as the invalidate of a dropped
collection, that follows the alignment done when the engine registers the hub
would otherwise mark the next commit delivered before it came (the first insert
after dropping a collection that did not exist was lost). A collection's drop is
published as MongoDB reports it: a ``drop`` event, then ``invalidate``. Each
event's wall-clock time is kept, for the ``wallTime`` MongoDB's events carry.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from mongoeco.change_streams import ChangeStreamHub, ChangeStreamHubState

DOCUMENT_CHANGES = frozenset({"insert", "update", "replace", "delete"})
"""The events a commit delivers; every other event is published directly."""

WALL_TIMES = 100_000
"""Events whose wall-clock time is kept when the hub's history is unbounded."""


def _dropped_collection(payload: dict[str, Any]) -> bool:
    """An invalidate that mongoeco publishes for a collection's drop (its key is the namespace)."""
    key = payload.get("document_key") or {}
    return key.get("_id") == f"{payload.get('db_name')}.{payload.get('coll_name')}"


class EmbeddedHub(ChangeStreamHub):
    """A ChangeStreamHub whose duplicate check is by commit sequence, not by event number."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._committed = 0  # highest commit sequence delivered (or skipped at registration)
        self._delivering: int | None = None
        self._wall_times: OrderedDict[int, datetime] = OrderedDict()
        self._wall_limit = options.get("max_retained_events") or WALL_TIMES

    def wall_time(self, event: int) -> datetime | None:
        """When event number ``event`` was published (None once it is no longer kept)."""
        with self._condition:
            return self._wall_times.get(event)

    def _append_committed_event_locked(self, event: Any) -> None:
        self._wall_times[event.token] = datetime.now(UTC)
        while len(self._wall_times) > self._wall_limit:
            self._wall_times.popitem(last=False)
        super()._append_committed_event_locked(event)

    @property
    def state(self) -> ChangeStreamHubState:
        # mongoeco's delivery reads state.next_token as "the next sequence I have not seen".
        return dataclasses.replace(super().state, next_token=self._committed + 1)

    def align_commit_sequence(self, next_sequence: int) -> None:
        # Sequences below next_sequence are accounted for; the one given is being delivered.
        self._committed = max(self._committed, next_sequence - 1)
        self._delivering = next_sequence

    def publish(self, **payload: Any) -> None:
        if payload.get("operation_type") == "invalidate" and _dropped_collection(payload):
            super().publish(**{**payload, "operation_type": "drop", "document_key": {}})
        super().publish(**payload)
        if self._delivering is not None and payload.get("operation_type") in DOCUMENT_CHANGES:
            self._committed = max(self._committed, self._delivering)
            self._delivering = None

    def mark_gap(self) -> None:
        super().mark_gap()
        if self._delivering is not None:
            self._committed = max(self._committed, self._delivering)
            self._delivering = None
