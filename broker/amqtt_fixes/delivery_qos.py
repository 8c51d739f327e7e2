"""Delivery QoS: a message goes to a subscriber at min(QoS it was published with, QoS granted).

MQTT 3.1.1 §3.8.4: "The QoS of Payload Messages sent in response to a
Subscription MUST be the minimum of the QoS of the originally published
message and the maximum QoS granted by the Server" (and §3.3.5: with
overlapping subscriptions, at least one copy at the highest QoS of those
that match). edgebus sizes its acknowledgements and its duplicate
accounting by the QoS a message arrives with.

amqtt 0.12.1 fault: its broadcast loop picks each delivery's QoS as
``broadcast.get("qos", subscription_qos)``, and nothing puts the publish QoS
into the broadcast, so every message goes out at the subscription's QoS (a
QoS 0 publish reaches a QoS 2 subscriber as QoS 2). A will's QoS, the one
thing amqtt does put there, overrides the subscription's instead of capping it.

The fix: ``Broker._handle_message_delivery`` (which handles a client's
PUBLISH) notes the publish QoS in a context variable, and
``Broker._broadcast_message`` (which it calls, as does the will) puts it
into a broadcast whose ``get("qos", subscription_qos)`` answers the minimum.

Proved by ``tests/conformance/test_delivery.py``:
``test_delivery_qos_is_the_lower_of_publish_and_subscription`` and
``test_overlapping_subscriptions``.
"""

from __future__ import annotations

import contextvars
from typing import Any

from amqtt.broker import Broker

from broker.amqtt_fixes import mark

__all__ = ["TARGETS", "Broadcast", "install"]

TARGETS = ((Broker, "_broadcast_message"), (Broker, "_handle_message_delivery"))

_PUBLISH_QOS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "edgebus_publish_qos", default=None)


class Broadcast(dict[str, Any]):
    """amqtt's broadcast record whose ``get("qos", subscription_qos)`` is the delivery QoS.

    >>> Broadcast(topic="t", publish_qos=1).get("qos", 2), Broadcast(topic="t").get("qos", 2)
    (1, 2)
    """

    def get(self, key: str, default: Any = None) -> Any:
        if key == "qos" and "qos" not in self:
            publish_qos = super().get("publish_qos")
            if publish_qos is not None and default is not None:
                return min(publish_qos, default)
            return default if publish_qos is None else publish_qos
        return super().get(key, default)


@mark("delivery_qos")
async def _broadcast_message(self: Broker, session: Any, topic: str | None,
                             data: bytes | bytearray | None, force_qos: int | None = None) -> None:
    publish_qos = force_qos if force_qos is not None else _PUBLISH_QOS.get()
    await self._broadcast_queue.put(Broadcast(session=session, topic=topic, data=data,
                                              publish_qos=publish_qos))


def install() -> None:
    handle_message_delivery = Broker._handle_message_delivery

    @mark("delivery_qos")
    async def _handle_message_delivery(self: Broker, client_session: Any, handler: Any,
                                       wait_deliver: Any) -> bool:
        message = wait_deliver.result()
        token = _PUBLISH_QOS.set(getattr(message, "qos", None))
        try:
            return bool(await handle_message_delivery(self, client_session, handler, wait_deliver))
        finally:
            _PUBLISH_QOS.reset(token)

    Broker._broadcast_message = _broadcast_message
    Broker._handle_message_delivery = _handle_message_delivery
