"""The embedded server as the primary of a one-node replica set, as a driver sees one.

``hello`` names the set (``setName``, ``hosts``, ``primary``, ``me``), so pymongo
and the Node driver treat the server as MongoDB deployments in production are
treated: retryable writes (``txnNumber``, ``embedded.retryable``), read-preference
rules in transactions, cluster-time gossip. Every reply, error or not, carries
``operationTime`` and ``$clusterTime``: the cluster time is the change streams'
clock (``embedded.tokens``), so an ``operationTime`` is a valid
``startAtOperationTime``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bson import Binary, ObjectId
from mongoeco.types import Timestamp
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.requests import WireRequestContext

HELLO = frozenset({"hello", "isMaster", "ismaster"})

NO_SIGNATURE = {"hash": Binary(bytes(20)), "keyId": 0}
"""The signature of an unsigned cluster time (a server without keys, as with authentication off)."""


UNSATISFIABLE = {"code": 100, "codeName": "UnsatisfiableWriteConcern", "errmsg": "Not enough data-bearing nodes"}
"""The write concern error of a write that asks more members to acknowledge it than the set has."""


def _more_members(body: dict[str, Any]) -> bool:
    """Whether a command's write concern asks for more than the one member there is."""
    concern = body.get("writeConcern")
    members = concern.get("w") if isinstance(concern, dict) else None
    members = getattr(members, "value", members)
    return isinstance(members, int) and not isinstance(members, bool) and members > 1


class ReplicaSetPrimary:
    """What makes replies those of set ``name``'s only member, ``host``."""

    def __init__(self, name: str, host: str, clock: Callable[[], Timestamp]) -> None:
        self.name, self.host, self.clock = name, host, clock
        self.election_id = ObjectId()

    def hello(self, reply: dict[str, Any]) -> None:
        """Turn a standalone's hello into the primary's."""
        now = self.clock()
        reply.update({
            "isWritablePrimary": True, "secondary": False, "setName": self.name, "setVersion": 1,
            "hosts": [self.host], "primary": self.host, "me": self.host, "electionId": self.election_id,
            "lastWrite": {"opTime": {"ts": now, "t": 1}, "lastWriteDate": datetime.now(UTC).replace(microsecond=0),
                          "majorityOpTime": {"ts": now, "t": 1},
                          "majorityWriteDate": datetime.now(UTC).replace(microsecond=0)},
        })
        if "ismaster" in reply:
            reply["ismaster"] = True

    def stamp(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Add the operation and cluster times to a reply."""
        now = self.clock()
        reply.setdefault("operationTime", now)
        reply["$clusterTime"] = {"clusterTime": now, "signature": NO_SIGNATURE}
        return reply

    def install(self, executor: WireCommandExecutor) -> None:
        """Answer through ``executor`` as this set's primary."""
        execute, error_document = executor.execute_prepared, executor.error_document

        async def execute_prepared(context: WireRequestContext) -> dict[str, Any]:
            reply = await execute(context)
            if context.command_name in HELLO and isinstance(reply, dict):
                self.hello(reply)
            if isinstance(reply, dict) and reply.get("ok") == 1 and _more_members(context.raw_body):
                reply.setdefault("writeConcernError", dict(UNSATISFIABLE))
            return self.stamp(reply) if isinstance(reply, dict) else reply

        def stamped_error(error: Exception) -> dict[str, Any]:
            return self.stamp(error_document(error))

        executor.execute_prepared = execute_prepared  # type: ignore[method-assign]
        executor.error_document = stamped_error  # type: ignore[method-assign,assignment]
