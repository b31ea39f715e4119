"""mongoeco's change hub with event numbering that survives direct publishes.

mongoeco delivers most changes in commit-sequence order and drops any whose
sequence is below the hub's next event number, as a duplicate. But some events
(a dropped database, for one) are published directly and take an event number
that no commit sequence accounts for; every later commit then looks like a
duplicate until the sequences catch up, and those inserts never reach a change
stream. Found here: after ``drop_database`` the next insert was never seen.
This hub keeps its own event numbers and tracks delivered commit sequences
separately, so the duplicate check compares sequences with sequences.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mongoeco.change_streams import ChangeStreamHub, ChangeStreamHubState


class EmbeddedHub(ChangeStreamHub):
    """A ChangeStreamHub whose duplicate check is by commit sequence, not by event number."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._committed = 0  # highest commit sequence delivered (or skipped at registration)
        self._delivering: int | None = None

    @property
    def state(self) -> ChangeStreamHubState:
        # mongoeco's delivery reads state.next_token as "the next sequence I have not seen".
        return dataclasses.replace(super().state, next_token=self._committed + 1)

    def align_commit_sequence(self, next_sequence: int) -> None:
        # Sequences below next_sequence are accounted for; the one given is being delivered.
        self._committed = max(self._committed, next_sequence - 1)
        self._delivering = next_sequence

    def publish(self, **payload: Any) -> None:
        super().publish(**payload)
        if self._delivering is not None:
            self._committed = max(self._committed, self._delivering)
            self._delivering = None

    def mark_gap(self) -> None:
        super().mark_gap()
        if self._delivering is not None:
            self._committed = max(self._committed, self._delivering)
            self._delivering = None
