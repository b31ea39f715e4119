"""mongoeco's memory engine with MongoDB-like inserts and transactions.

Two behaviours of mongoeco 4.11.0's ``MemoryEngine`` make it unfit as a
service's database, and both are fixed here, narrowly:

* every single-document insert scans the whole collection for an ``_id``
  clash, so inserts slow down linearly with collection size;
* a transaction's commit fails when *any* write happened anywhere since it
  began, without code 112 or the ``TransientTransactionError`` label.

The overrides touch private methods of mongoeco, which is why the dependency
is pinned to exactly 4.11.0.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from mongoeco.engines.mvcc import MemoryMvccState
from mongoeco.errors import DuplicateKeyError, OperationFailure
from mongoeco.session import ClientSession

from embedded import membership
from embedded.planner import IndexedLookups
from embedded.reindex import ChangedIndexes

WRITE_CONFLICT = 112
"""MongoDB's error code for a write conflict."""

_ABSENT = object()

type Namespace = tuple[str, str]


def write_conflict(message: str) -> OperationFailure:
    """The error MongoDB answers to a conflicting commit: code 112, retryable."""
    return OperationFailure(
        f"WriteConflict: {message}",
        code=WRITE_CONFLICT,
        error_labels=("TransientTransactionError",),
    )


class EmbeddedEngine(ChangedIndexes, IndexedLookups):
    """A ``MemoryEngine`` whose inserts stay O(1), whose commits conflict per document, whose updates
    re-index only what they change (``embedded.reindex``), whose planner uses more indexes
    (``embedded.planner``) and whose ``$in`` is linear (``embedded.membership``)."""

    def __init__(self) -> None:
        super().__init__()
        membership.install()
        # session id -> namespace -> storage key -> the value before the
        # transaction first wrote it (the snapshot's value, or _ABSENT).
        self._txn_originals: dict[str, dict[Namespace, dict[Any, Any]]] = {}

    # -- inserts -----------------------------------------------------------

    def _ensure_unique_indexes(  # type: ignore[override]
        self, db_name: str, coll_name: str, candidate: Any, **kwargs: Any
    ) -> None:
        # For ObjectId and string ids the storage key is the id itself, so the
        # exact-key check (check_id_storage) already finds a clash; the full
        # scan is only needed where equal values have different keys (numbers).
        if kwargs.get("scan_payload_id") and isinstance(candidate.get("_id"), ObjectId | str):
            kwargs["scan_payload_id"] = False
        super()._ensure_unique_indexes(db_name, coll_name, candidate, **kwargs)

    # -- remembering what a transaction wrote -------------------------------

    def _set_storage_document_locked(self, collection: Any, storage_key: Any, document: Any) -> None:
        self._remember_original(collection, storage_key)
        super()._set_storage_document_locked(collection, storage_key, document)

    def _delete_storage_document_locked(self, collection: Any, storage_key: Any) -> None:
        self._remember_original(collection, storage_key)
        super()._delete_storage_document_locked(collection, storage_key)

    def _remember_original(self, collection: Any, storage_key: Any) -> None:
        if not self._publication_stack:
            return
        state = self._publication_stack[-1].state
        if state is None:
            return
        session_id = next((sid for sid, s in self._mvcc_states.items() if s is state), None)
        namespace = next(
            (
                (db, name)
                for db, colls in state.storage.items()
                for name, coll in colls.items()
                if coll is collection
            ),
            None,
        )
        if session_id is None or namespace is None:
            return
        originals = self._txn_originals.setdefault(session_id, {}).setdefault(namespace, {})
        if storage_key not in originals:
            originals[storage_key] = collection.get(storage_key, _ABSENT)

    # -- commit and abort ----------------------------------------------------

    def _commit_session_transaction(self, session: ClientSession) -> None:
        # A conflict leaves the transaction as it was: mongoeco's session retries
        # the commit hook on TransientTransactionError and must meet the same
        # conflict again, not an empty transaction that "commits". Whoever asked
        # for the commit then aborts (see embedded.mongo).
        with self._meta_lock:
            state = self._mvcc_states.get(session.session_id)
            try:
                if (
                    state is not None
                    and state.has_writes
                    and state.snapshot_version != self._mvcc_version
                ):
                    self._rebase_locked(state, self._txn_originals.get(session.session_id, {}))
                super()._commit_session_transaction(session)
            except OperationFailure as error:
                if getattr(error, "code", None) != WRITE_CONFLICT and "Write conflict" in str(error):
                    raise write_conflict(str(error)) from error
                raise
        self._txn_originals.pop(session.session_id, None)

    def _abort_session_transaction(self, session: ClientSession) -> None:
        self._txn_originals.pop(session.session_id, None)
        super()._abort_session_transaction(session)

    def _rebase_locked(self, state: MemoryMvccState, written: dict[Namespace, dict[Any, Any]]) -> None:
        """Move the transaction onto the live state, or raise a write conflict.

        MongoDB conflicts only when another write touched the same document. So
        each namespace the transaction wrote becomes the live collection plus
        the transaction's own document changes, provided every document it
        wrote is still as the transaction first saw it.
        """
        if state.touched_databases:
            raise write_conflict("database-level change during a concurrent write")
        if state.touched_namespaces - set(written):
            raise write_conflict("the transaction's writes could not be traced")
        rebase = []
        for (db, coll), originals in written.items():
            live = self._storage.get(db, {}).get(coll)
            if live is None:
                if any(value is not _ABSENT for value in originals.values()):
                    raise write_conflict(f"{db}.{coll} was dropped during the transaction")
                continue  # created inside the transaction: installed as it is
            for key, original in originals.items():
                if live.get(key, _ABSENT) is not original:
                    raise write_conflict(f"document {key!r} in {db}.{coll} changed concurrently")
            live_indexes = self._indexes.get(db, {}).get(coll, [])
            txn_indexes = state.indexes.get(db, {}).get(coll, [])
            if [i.name for i in live_indexes] != [i.name for i in txn_indexes]:
                raise write_conflict(f"indexes of {db}.{coll} changed concurrently")
            rebase.append((db, coll, live, originals))
        for db, coll, live, originals in rebase:
            self._rebase_namespace_locked(state, db, coll, live, originals)
        state.snapshot_version = self._mvcc_version

    def _rebase_namespace_locked(
        self, state: MemoryMvccState, db: str, coll: str, live: Any, originals: dict[Any, Any]
    ) -> None:
        transaction = state.storage[db][coll]
        rebased = live.copy()
        index_data = {
            name: index_map.copy()
            for name, index_map in self._index_data.get(db, {}).get(coll, {}).items()
        }
        state.index_data.setdefault(db, {})[coll] = index_data
        views: dict[str, Any] = {"index_data_view": state.index_data, "indexes_view": self._indexes}
        for key, original in originals.items():
            current = transaction.get(key, _ABSENT)
            if current is original:
                continue
            if original is not _ABSENT:
                old = self._borrow_storage_document(original)
                self._update_indexes_locked(db, coll, key, old, action="delete", **views)
                del rebased[key]
            if current is not _ABSENT:
                new = self._borrow_storage_document(current)
                try:
                    self._ensure_unique_indexes(
                        db, coll, new, exclude_storage_key=key,
                        storage_view={db: {coll: rebased}}, **views,
                    )
                except DuplicateKeyError as error:
                    raise write_conflict(str(error)) from error
                rebased[key] = current
                self._update_indexes_locked(db, coll, key, new, action="insert", **views)
        state.storage[db][coll] = rebased
