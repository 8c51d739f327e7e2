"""Broadcast over a snapshot of the subscriptions, so a topic check cannot lose a delivery.

amqtt 0.12.1 fault: ``Broker._run_broadcast`` walks ``self._subscriptions``
(a dict of filter -> subscriber list) and, for every subscriber, *awaits*
the topic plugins' ``RECEIVE`` check inside that walk. A SUBSCRIBE or a
disconnect handled during the await changes the dict, and the walk dies
with "dictionary changed size during iteration": the message is delivered
to nobody after that point, and asyncio only logs "Task exception was never
retrieved". Without topic plugins nothing awaits there, which is why it
appears only once the embedded broker enforces an ACL (:mod:`broker.amqtt_acl`).

The fix: the first broadcast swaps the dict for a subclass whose ``items()``
returns a snapshot (the filters and a copy of each subscriber list), which
is the only way ``_run_broadcast`` reads it; every other use of the dict is
unchanged. A subscription made during a broadcast gets the next message,
as in Mosquitto.

Proved by ``tests/test_acl_battery.py`` (the lock service and Raft group
on the embedded broker with the ACL, which lost replies before).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from amqtt.broker import Broker

from broker.amqtt_fixes import mark

__all__ = ["TARGETS", "SnapshotSubscriptions", "install"]

TARGETS = ((Broker, "_run_broadcast"),)


class SnapshotSubscriptions(dict[str, list[tuple[Any, int]]]):
    """amqtt's subscription table whose ``items()`` is a snapshot safe to await in.

    >>> table = SnapshotSubscriptions({"a/#": [("s1", 1)]})
    >>> for _filter, subs in table.items():
    ...     table["b"] = []
    ...     subs.append(("s2", 0))
    >>> sorted(table), table["a/#"]
    (['a/#', 'b'], [('s1', 1)])
    """

    def items(self) -> Iterable[tuple[str, list[tuple[Any, int]]]]:  # type: ignore[override]
        return [(topic_filter, list(subs)) for topic_filter, subs in super().items()]


def install() -> None:
    run_broadcast = Broker._run_broadcast

    @mark("broadcast_snapshot")
    async def _run_broadcast(self: Broker, running_tasks: Any) -> None:
        if type(self._subscriptions) is dict:
            self._subscriptions = SnapshotSubscriptions(self._subscriptions)
        await run_broadcast(self, running_tasks)

    Broker._run_broadcast = _run_broadcast
