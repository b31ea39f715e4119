"""Updates that re-index only what they changed.

mongoeco's ``update_with_operation`` takes an updated document out of every
index of its collection and puts it back in. Each of those steps rebuilds
persistent-map nodes and records an undo entry, so with a handful of indexes
they were most of an update's cost, though a typical update (a claim, a
decision) changes the keys of one or two. Here the removal is held back until
the re-insertion it always precedes: an index whose keys and membership the
update left as they were is not touched.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.virtual_indexes import document_in_virtual_index

_UPDATING: ContextVar[bool] = ContextVar("embedded_updating", default=False)
"""Set while this task runs an update: only there is a removal surely followed by its re-insertion."""


@dataclass(frozen=True)
class _Removal:
    """A document's removal from its indexes, held back until its re-insertion."""

    db: str
    coll: str
    storage_key: Any
    document: Any
    index_data_view: Any
    indexes_view: Any

    def reinserts(self, db: str, coll: str, storage_key: Any, index_data_view: Any, indexes_view: Any) -> bool:
        return (db, coll) == (self.db, self.coll) and storage_key == self.storage_key and (
            index_data_view is self.index_data_view and indexes_view is self.indexes_view
        )


class ChangedIndexes(MemoryEngine):
    """A ``MemoryEngine`` whose updates leave alone the indexes whose entries they do not change."""

    _removal: _Removal | None = None

    async def update_with_operation(self, *args: Any, **kwargs: Any) -> Any:
        marked = _UPDATING.set(True)
        try:
            result = await super().update_with_operation(*args, **kwargs)
        except BaseException:
            self._removal = None  # rolled back with the update, as was the index state it would have changed
            raise
        finally:
            _UPDATING.reset(marked)
        if self._removal is not None:  # not followed by its re-insertion: applied as it was asked
            with self._meta_lock:
                self._apply_removal()
        return result

    def _update_indexes_locked(  # type: ignore[override]
        self, db_name: str, coll_name: str, storage_key: Any, document: Any, *, action: str = "insert",
        index_data_view: dict | None = None, indexes_view: dict | None = None,  # type: ignore[type-arg]
    ) -> None:
        removal = self._removal
        if removal is not None:
            if action == "insert" and removal.reinserts(db_name, coll_name, storage_key, index_data_view,
                                                        indexes_view):
                self._removal = None
                self._reindex(removal, document)
                return
            self._apply_removal()
        if action == "delete" and _UPDATING.get():
            self._removal = _Removal(db_name, coll_name, storage_key, document, index_data_view, indexes_view)
            return
        super()._update_indexes_locked(db_name, coll_name, storage_key, document, action=action,
                                       index_data_view=index_data_view, indexes_view=indexes_view)

    def _delete_storage_document_locked(self, collection: Any, storage_key: Any) -> None:
        # A document deleted (a TTL purge's, before an update runs) leaves its indexes at once.
        self._apply_removal()
        super()._delete_storage_document_locked(collection, storage_key)

    def _apply_removal(self) -> None:
        removal, self._removal = self._removal, None
        if removal is not None:
            super()._update_indexes_locked(removal.db, removal.coll, removal.storage_key, removal.document,
                                           action="delete", index_data_view=removal.index_data_view,
                                           indexes_view=removal.indexes_view)

    def _reindex(self, removal: _Removal, updated: Any) -> None:
        """Move the document's entries from its old to its updated version, in those indexes where they differ."""
        indexes_view = self._indexes if removal.indexes_view is None else removal.indexes_view
        indexes = indexes_view.get(removal.db, {}).get(removal.coll, [])
        changed = [index for index in indexes if self._differs(index, removal.document, updated)]
        if not changed:
            return
        only = {removal.db: {removal.coll: changed}}
        for document, action in ((removal.document, "delete"), (updated, "insert")):
            super()._update_indexes_locked(removal.db, removal.coll, removal.storage_key, document, action=action,
                                           index_data_view=removal.index_data_view, indexes_view=only)

    def _differs(self, index: Any, old: Any, new: Any) -> bool:
        if index.expire_after_seconds is not None:
            return True  # its expiry schedule is kept by the same steps
        fields = index["fields"]
        return (document_in_virtual_index(old, index) != document_in_virtual_index(new, index)
                or self._index_keys(old, fields) != self._index_keys(new, fields))
