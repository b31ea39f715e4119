"""``$in`` in linear time for the embedded engine: the list of values is hashed once per query.

mongoeco 4.11.0 tests each document against each ``$in`` value in turn (compiled
matchers), or hashes the values again for every document (the interpreted
matcher): a 10,000-id ``$in`` over 10,000 documents is 10^8 comparisons, minutes.
Here the values are split once, with mongoeco's own ``_prepare_membership_values``
(hashable keys; regular expressions; the rest), strings and numbers of the rest are
hashed too (numbers by their BSON equality key, so 1, 1.0 and Decimal128("1") stay
equal and apart from "1" or true), and each candidate costs a hash lookup or two plus
the few values that cannot be hashed.
An ``update_many`` checks every document it writes against its filter again, compiling
that filter each time: a filter with a long ``$in`` is compiled once per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mongoeco.core import query_plan
from mongoeco.core.bson_ordering import bson_equality_key
from mongoeco.core.bson_scalars import is_bson_numeric
from mongoeco.core.compiled_query import CompiledQuery
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.query_plan import InCondition

SMALL = 8
"""Lists this short keep mongoeco's own matching (hashing them would not pay)."""

_PREPARED_KEPT = 32
"""Prepared value lists the interpreted matcher remembers (one query uses one)."""

_compiled_node_to_code = CompiledQuery._node_to_code
_candidate = QueryEngine._candidate_matches_membership.__func__  # type: ignore[attr-defined]
_compile_filter = query_plan.compile_filter
_plans: dict[tuple[int, int, Any], tuple[Any, Any]] = {}
_prepare = QueryEngine._prepare_membership_values.__func__  # type: ignore[attr-defined]
_prepared: dict[tuple[int, bool, int], tuple[Any, Any]] = {}


class _Rest(list[Any]):
    """The values mongoeco could not hash, less the strings and numbers hashed in ``keys``."""

    def __init__(self, values: list[Any], keys: set[Any]) -> None:
        super().__init__(values)
        self.keys = keys


def _key(value: Any) -> Any:
    """A hashable key equal for values ``$in`` takes as equal: strings, and numbers of any BSON type."""
    if isinstance(value, str):
        return ("string", value)
    if not isinstance(value, bool) and is_bson_numeric(value):
        return bson_equality_key(value)
    return None


def _split(prepared: Any, collation: Any) -> Any:
    lookup, regexes, residual = prepared
    if collation is not None:  # strings compare by collation then: keep them in mongoeco's loop
        return prepared
    keys, rest = set(), []
    for value in residual:
        key = _key(value)
        if key is None:
            rest.append(value)
        else:
            keys.add(key)
    return lookup, regexes, _Rest(rest, keys)


def _candidate_matches(cls: type, candidate: Any, *, residual_values: Any, **options: Any) -> bool:
    if isinstance(residual_values, _Rest) and residual_values.keys:
        key = _key(candidate)
        if key is not None and key in residual_values.keys:
            return True
    return _candidate(cls, candidate, residual_values=residual_values, **options)  # type: ignore[no-any-return]


def _matcher(values: tuple[Any, ...], null_matches_undefined: bool, collation: Any) -> Callable[..., bool]:
    lookup, regexes, residual = QueryEngine._prepare_membership_values(
        values, null_matches_undefined=null_matches_undefined, collation=collation
    )

    def matches(candidates: list[Any], dialect: Any, collation: Any) -> bool:
        return any(
            QueryEngine._candidate_matches_membership(
                candidate, literal_lookup=lookup, regex_values=regexes, residual_values=residual,
                null_matches_undefined=null_matches_undefined, dialect=dialect, collation=collation,
            )
            for candidate in candidates
        )

    return matches


def _node_to_code(self: CompiledQuery, node: Any, depth: int) -> str:
    if isinstance(node, InCondition) and len(node.values) > SMALL:
        field_key = self._field(node.field)
        matcher = self._store("in", _matcher(node.values, node.null_matches_undefined, self.collation))
        return f"{matcher}(_extract(doc, {field_key}) or [None], dialect, collation)"
    return _compiled_node_to_code(self, node, depth)  # type: ignore[no-any-return]


def _prepare_once(
    cls: type, values: tuple[Any, ...], *, null_matches_undefined: bool, collation: Any = None
) -> Any:
    """mongoeco's preparation, remembered for the list object of the query being matched."""
    if len(values) <= SMALL:
        return _prepare(cls, values, null_matches_undefined=null_matches_undefined, collation=collation)
    key = (id(values), null_matches_undefined, id(collation))
    kept = _prepared.get(key)
    if kept is not None and kept[0] is values:
        return kept[1]
    prepared = _split(_prepare(cls, values, null_matches_undefined=null_matches_undefined, collation=collation),
                      collation)
    if len(_prepared) >= _PREPARED_KEPT:
        _prepared.clear()
    _prepared[key] = (values, prepared)  # the list itself is kept, so its id is not reused meanwhile
    return prepared


def _long_in(filter_spec: Any) -> bool:
    """Whether a filter of plain field conditions (so no ``$expr`` reading variables) has a ``$in``/``$nin``
    long enough to be worth compiling once."""
    if not isinstance(filter_spec, dict) or any(str(name).startswith("$") for name in filter_spec):
        return False
    return any(
        isinstance(condition, dict) and any(
            isinstance(condition.get(op), list | tuple) and len(condition[op]) > SMALL for op in ("$in", "$nin")
        )
        for condition in filter_spec.values()
    )


def _compile_filter_once(filter_spec: Any, *, dialect: Any = None, variables: Any = None, planning_mode: Any = None,
                         _depth: int = 0) -> Any:
    """mongoeco's compile_filter, remembered for the filter object of the request being served."""
    options: dict[str, Any] = {"variables": variables, "_depth": _depth}
    if dialect is not None:
        options["dialect"] = dialect
    if planning_mode is not None:
        options["planning_mode"] = planning_mode
    if _depth or not _long_in(filter_spec):
        return _compile_filter(filter_spec, **options)
    key = (id(filter_spec), id(dialect), planning_mode)
    kept = _plans.get(key)
    if kept is not None and kept[0] is filter_spec:
        return kept[1]
    plan = _compile_filter(filter_spec, **options)
    if len(_plans) >= _PREPARED_KEPT:
        _plans.clear()
    _plans[key] = (filter_spec, plan)  # the filter itself is kept, so its id is not reused meanwhile
    return plan


def install() -> None:
    """Patch mongoeco's ``$in`` matching and the compiling of long-``$in`` filters (idempotent)."""
    CompiledQuery._node_to_code = _node_to_code  # type: ignore[method-assign]
    QueryEngine._prepare_membership_values = classmethod(_prepare_once)  # type: ignore[method-assign,assignment]
    QueryEngine._candidate_matches_membership = classmethod(_candidate_matches)  # type: ignore[method-assign,assignment]
    query_plan.compile_filter = _compile_filter_once
