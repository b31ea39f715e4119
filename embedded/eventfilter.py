"""How a change stream's cursor turns a recorded event into what its client gets, made cheap per event.

mongoeco's cursor copies every event its scope admits into a document, then prepares and compiles its
pipeline again for that one document (some 150 µs a time, most of an event's cost to a stream). A stream
that wants only inserts, as msgstatus's message stream does, so pays that for every update of its collection
(two per message decided) only to drop it. Here a cursor's pipeline is compiled once, when it opens, and an
event that the pipeline's leading ``$match`` refuses by its ``operationType`` is turned away before it is
copied. What reaches the client is unchanged: the only condition used is one the ``$match`` itself imposes
on every event it passes, and a pipeline that does not compile keeps mongoeco's own way (and its errors).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mongoeco._change_streams.pipeline import apply_full_document_mode
from mongoeco.core.aggregation.compiled_pipeline import compile_pipeline
from mongoeco.core.aggregation.preparation import prepare_pipeline

log = logging.getLogger(__name__)

Transform = Callable[[Any], Any]


def operation_types(pipeline: list[dict[str, Any]] | None) -> frozenset[str] | None:
    """The operation types the pipeline's leading ``$match`` admits (None: it admits any)."""
    if not pipeline or not isinstance(pipeline[0], dict) or set(pipeline[0]) != {"$match"}:
        return None
    match = pipeline[0]["$match"]
    wanted = match.get("operationType") if isinstance(match, dict) else None
    if isinstance(wanted, str):
        return frozenset({wanted})
    if (isinstance(wanted, dict) and set(wanted) == {"$in"} and isinstance(wanted["$in"], list)
            and all(isinstance(kind, str) for kind in wanted["$in"])):
        return frozenset(wanted["$in"])
    return None


def install(cursor: Any) -> None:
    """Give a mongoeco change-stream cursor the cheaper transform (its own stays where this one cannot go)."""
    kinds = operation_types(cursor._pipeline)
    transform = _compiled(cursor) or cursor._transform
    if kinds is None:
        cursor._transform = transform
        return

    def admitted(event: Any) -> Any:
        return transform(event) if event.operation_type in kinds else None

    cursor._transform = admitted


def _compiled(cursor: Any) -> Transform | None:
    """The cursor's transform over its pipeline compiled once (None: no pipeline, or it does not compile)."""
    if cursor._pipeline is None:
        return None
    try:
        plan = compile_pipeline(prepare_pipeline(cursor._pipeline))
    except Exception as error:  # mongoeco's own transform raises it on the first event, as MongoDB would
        log.debug("change stream pipeline not compiled ahead (%s)", error)
        return None
    if plan is None:
        return None

    def transform(event: Any) -> Any:
        if not cursor._scope.matches(event):
            return None
        document = apply_full_document_mode(event.to_document(), cursor._full_document)
        kept = plan.execute([document])
        return cursor._materialize_document(kept[0]) if kept else None

    return transform
