"""More index use for the embedded engine: ``$in``, ``null`` and ``$exists: false`` on single-field indexes.

mongoeco 4.11.0's memory engine uses an index only for an equality on a
single-field ascending index; ``{delivered: {$exists: false}}`` or
``{source: {$in: [...]}}`` scan the whole collection. MongoDB answers both from
an index, and the sweep relies on that to stay cheap. The candidates found here
are a superset: every document is still matched against the full query.
"""

from __future__ import annotations

import re
from typing import Any

from mongoeco.core.query_plan import AndCondition, EqualsCondition, ExistsCondition, InCondition
from mongoeco.engines.memory import MemoryEngine, _MemoryIndexedCandidates

_MISSING_KEY = (None,)
"""How the memory engine indexes a document that lacks the field."""


def _not_plain(value: Any) -> bool:
    """Values whose matches an equality key cannot find (documents, arrays, regular expressions)."""
    return isinstance(value, dict | list | tuple | re.Pattern) or type(value).__name__ == "Regex"


class IndexedLookups(MemoryEngine):
    """Answers ``$in``, ``null`` and ``$exists: false`` from a single-field index when there is one."""

    def _indexed_candidate_storage_keys_for_plan_locked(  # type: ignore[override]
        self, indexes: list[Any], index_data: dict[str, Any], query_plan: Any, *, dialect: Any, collation: Any
    ) -> _MemoryIndexedCandidates | None:
        found = super()._indexed_candidate_storage_keys_for_plan_locked(
            indexes, index_data, query_plan, dialect=dialect, collation=collation
        )
        if found is not None or collation is not None:
            return found
        clauses = query_plan.clauses if isinstance(query_plan, AndCondition) else (query_plan,)
        for clause in clauses:
            keys = self._lookup_keys(clause)
            index_map = self._usable_index(indexes, index_data, getattr(clause, "field", None))
            if keys is None or index_map is None:
                continue
            storage_keys: set[Any] = set()
            for key in keys:
                storage_keys.update(index_map.get(key, ()))
            return _MemoryIndexedCandidates(storage_keys)
        return None

    def _lookup_keys(self, clause: Any) -> list[tuple[Any, ...]] | None:
        """The index keys whose documents include every match of ``clause``; None if unknown."""
        if isinstance(clause, ExistsCondition) and clause.value is False:
            return [_MISSING_KEY]
        if isinstance(clause, EqualsCondition) and clause.value is None:
            return [_MISSING_KEY, (self._index_equality_key(None),)]
        if isinstance(clause, InCondition):
            if any(_not_plain(v) for v in clause.values):
                return None
            keys = [(self._index_equality_key(v),) for v in clause.values]
            if None in clause.values:
                keys.append(_MISSING_KEY)
            return keys
        return None

    @staticmethod
    def _usable_index(indexes: list[Any], index_data: dict[str, Any], field: str | None) -> Any:
        """The data of a plain single-field ascending index on ``field`` (not sparse, partial or collated)."""
        if field is None:
            return None
        for index in indexes:
            if index["key"] != [(field, 1)]:
                continue
            if any(index.get(option) for option in ("sparse", "partialFilterExpression", "collation")):
                continue
            return index_data.get(index["name"])
        return None
