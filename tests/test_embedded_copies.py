"""The embedded server's deep copies share immutable BSON values and copy every container, as deepcopy did."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from bson import Decimal128, Int64, ObjectId
from bson.son import SON

from embedded import copies


def stored_message() -> dict:
    return {"_id": ObjectId(), "created": datetime.now(UTC), "n": Int64(3), "price": Decimal128("1.5"),
            "claim": {"token": "t", "until": datetime.now(UTC)}, "tags": ["a", {"b": [1, 2]}], "ordered": SON(a=1)}


def test_a_copied_document_shares_its_scalars_and_none_of_its_containers():
    copies.install()
    original = stored_message()

    copied = copy.deepcopy(original)

    assert copied == original
    assert copied["_id"] is original["_id"] and copied["created"] is original["created"]
    assert copied["claim"] is not original["claim"] and copied["tags"] is not original["tags"]
    assert copied["tags"][1]["b"] is not original["tags"][1]["b"]
    assert type(copied["ordered"]) is SON and copied["ordered"] is not original["ordered"]
    copied["claim"]["token"] = "changed"
    copied["tags"][1]["b"].append(3)
    assert original["claim"]["token"] == "t" and original["tags"][1]["b"] == [1, 2]


def test_a_copy_keeps_aliases_and_cycles_as_deepcopy_does():
    copies.install()
    shared: dict = {"x": [1]}
    looped: list = [shared, shared]
    looped.append(looped)

    copied = copy.deepcopy(looped)

    assert copied[0] is copied[1] and copied[0] is not shared
    assert copied[2] is copied
