"""More index use for the embedded engine: ``$in``, ``null``, ``$exists: false``, ranges, compound keys, and
the most selective of several indexes.

mongoeco 4.11.0's memory engine uses an index only for an equality on a
single-field ascending index, and only the first one it finds. MongoDB also
answers ``{delivered: {$exists: false}}``, ``{source: {$in: [...]}}`` and
``{until: {$lte: t}}`` from an index, uses the prefix of a compound index, and
picks the index that examines fewest documents; the sweep relies on all of it
to stay cheap. The candidates found here are a superset: every document is
still matched against the full query.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterable
from typing import Any

from bson import ObjectId
from mongoeco.core.query_plan import (
    AndCondition,
    EqualsCondition,
    ExistsCondition,
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    InCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
)
from mongoeco.engines.memory import MemoryEngine, _MemoryIndexedCandidates

_MISSING_KEY = (None,)
"""How the memory engine indexes a document that lacks the field."""

_RANGES: dict[type, Callable[[Any, Any], bool]] = {
    GreaterThanCondition: operator.gt,
    GreaterThanOrEqualCondition: operator.ge,
    LessThanCondition: operator.lt,
    LessThanOrEqualCondition: operator.le,
}

_ORDERED_TYPES = {"datetime", "number"}
"""Index key types whose values compare as MongoDB orders them within their type."""

_PROBE_LIMIT = 8
"""Buckets a candidate is looked up in, at most, to test it against a less selective index."""

type Buckets = list[Any]


def _not_plain(value: Any) -> bool:
    """Values whose matches an equality key cannot find (documents, arrays, regular expressions)."""
    return isinstance(value, dict | list | tuple | re.Pattern) or type(value).__name__ == "Regex"


class IndexedLookups(MemoryEngine):
    """Answers a query from the most selective usable index, intersecting with others where cheap."""

    def _indexed_candidate_storage_keys_for_plan_locked(  # type: ignore[override]
        self, indexes: list[Any], index_data: dict[str, Any], query_plan: Any, *, dialect: Any, collation: Any
    ) -> _MemoryIndexedCandidates | None:
        found = super()._indexed_candidate_storage_keys_for_plan_locked(
            indexes, index_data, query_plan, dialect=dialect, collation=collation
        )
        if collation is not None:
            return found
        clauses = query_plan.clauses if isinstance(query_plan, AndCondition) else (query_plan,)
        options = list(self._options(indexes, index_data, clauses))
        if found is not None:
            options.append([found.storage_keys])
        if not options:
            return None
        options.sort(key=lambda buckets: sum(len(bucket) for bucket in buckets))
        best, others = options[0], [o for o in options[1:] if len(o) <= _PROBE_LIMIT]
        if found is not None and best == [found.storage_keys] and not others:
            return found  # keeps mongoeco's ordered walk of its own bucket
        keys: Iterable[Any] = itertools.chain.from_iterable(best)
        if others:
            keys = (k for k in keys if all(any(k in bucket for bucket in other) for other in others))
        return _MemoryIndexedCandidates(set(keys))

    def _options(self, indexes: list[Any], index_data: dict[str, Any], clauses: Any) -> Iterable[Buckets]:
        """For each index the query can use, the buckets that hold every match."""
        absent: set[str] = set()
        for clause in clauses:
            field = getattr(clause, "field", None)
            keys = self._lookup_keys(clause)
            if field is None:
                continue
            if keys == [_MISSING_KEY]:
                absent.add(field)
            if field == "_id" and (ids := self._exact_ids(clause)) is not None:
                yield [ids]
                continue
            index_map = self._usable_index(indexes, index_data, [field])
            if index_map is None:
                continue
            if keys is not None:
                yield [index_map[key] for key in keys if key in index_map]
            elif type(clause) in _RANGES:
                yield self._range(index_map, clause)
        # A compound key holds each field's first value only, so only "all absent" is answered from it.
        for index in indexes:
            fields = [name for name, _ in index["key"]]
            if len(fields) < 2 or not absent.issuperset(fields):
                continue
            index_map = self._usable_index(indexes, index_data, fields)
            if index_map is not None:
                missing = (None,) * len(fields)
                yield [index_map[missing]] if missing in index_map else []

    def _exact_ids(self, clause: Any) -> set[Any] | None:
        """The storage keys of an ``_id`` equality or ``$in`` of ObjectIds and strings (whose storage key is
        the id itself; numbers are stored by their exact type, so 1.0 would miss 1)."""
        values = [clause.value] if isinstance(clause, EqualsCondition) else getattr(clause, "values", None)
        if not isinstance(clause, EqualsCondition | InCondition) or not values:
            return None
        if not all(isinstance(value, ObjectId | str) for value in values):
            return None
        return {self._storage_key(value) for value in values}

    def _range(self, index_map: Any, clause: Any) -> Buckets:
        """Every bucket but the missing field's and, of the bound's own type, those outside the bound.

        mongoeco's matcher compares across types where MongoDB brackets them, so keys of other
        types stay candidates; for a field that holds one type (dates, say) only the range is read.
        """
        bound = None if _not_plain(clause.value) else self._index_equality_key(clause.value)
        ordered = bound is not None and bound[0] in _ORDERED_TYPES
        within = _RANGES[type(clause)]
        return [
            bucket for (key,), bucket in index_map.items()
            if key is not None and not (ordered and isinstance(key, tuple) and key[0] == bound[0]  # type: ignore[index]
                                        and not within(key[1], bound[1]))  # type: ignore[index]
        ]

    def _lookup_keys(self, clause: Any) -> list[tuple[Any, ...]] | None:
        """The index keys whose documents include every match of ``clause``; None if unknown."""
        if isinstance(clause, ExistsCondition) and clause.value is False:
            return [_MISSING_KEY]
        if isinstance(clause, EqualsCondition):
            if clause.value is None:
                return [_MISSING_KEY, (self._index_equality_key(None),)]
            return None if _not_plain(clause.value) else [(self._index_equality_key(clause.value),)]
        if isinstance(clause, InCondition):
            if any(_not_plain(v) for v in clause.values):
                return None
            keys = [(self._index_equality_key(v),) for v in clause.values]
            if None in clause.values:
                keys.append(_MISSING_KEY)
            return keys
        return None

    @staticmethod
    def _usable_index(indexes: list[Any], index_data: dict[str, Any], fields: list[str]) -> Any:
        """The data of a plain ascending index on exactly ``fields`` (not sparse, partial or collated)."""
        for index in indexes:
            if index["key"] != [(name, 1) for name in fields]:
                continue
            if any(index.get(option) for option in ("sparse", "partialFilterExpression", "collation")):
                continue
            return index_data.get(index["name"])
        return None
