"""Retained messages go to the new subscription that matches them, and to nobody else.

MQTT 3.1.1 §3.3.1.3: "When a new subscription is established, the last
retained message, if any, on each matching topic name MUST be sent to the
subscriber" [MQTT-3.1.1-6]; nothing else is sent retained. edgebus keeps
device state in retained messages (status, birth, state/...), and the
security issue's per-device ACLs are checked when a client subscribes.

amqtt 0.12.1 fault: when any client connects, ``Broker._handle_client_session``
sends it the retained messages that match *every* client's subscriptions
(``for topic in self._subscriptions``), without its own subscription and
without an ACL check, so a client gets state it did not ask for (and is
perhaps not allowed to read), and a client that then subscribes gets each
retained message twice. The one correct caller of
``Broker._publish_retained_messages_for_subscription`` is
``Broker._handle_subscription``; the fix lets the method send only while that
caller runs (a context variable marks it).

Proved by ``tests/conformance/test_delivery.py``:
``test_retained_messages_only_for_own_subscriptions`` and
``test_retained_message_sent_on_new_subscription_has_retain_1`` (one copy).
"""

from __future__ import annotations

import contextvars
from typing import Any

from amqtt.broker import Broker

from broker.amqtt_fixes import mark

__all__ = ["TARGETS", "install"]

TARGETS = ((Broker, "_handle_subscription"), (Broker, "_publish_retained_messages_for_subscription"))

_SUBSCRIBING: contextvars.ContextVar[bool] = contextvars.ContextVar("edgebus_subscribing",
                                                                  default=False)


def install() -> None:
    handle_subscription = Broker._handle_subscription
    publish_retained = Broker._publish_retained_messages_for_subscription

    @mark("retained_on_subscribe")
    async def _handle_subscription(self: Broker, client_session: Any, handler: Any,
                                   subscribe_waiter: Any) -> None:
        token = _SUBSCRIBING.set(True)
        try:
            await handle_subscription(self, client_session, handler, subscribe_waiter)
        finally:
            _SUBSCRIBING.reset(token)

    @mark("retained_on_subscribe")
    async def _publish_retained_messages_for_subscription(self: Broker, subscription: Any,
                                                          session: Any) -> None:
        if _SUBSCRIBING.get():
            await publish_retained(self, subscription, session)

    Broker._handle_subscription = _handle_subscription
    Broker._publish_retained_messages_for_subscription = (
        _publish_retained_messages_for_subscription)
