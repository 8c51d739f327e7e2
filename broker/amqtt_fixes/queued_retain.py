"""Queued messages: what a persistent session missed while offline arrives with RETAIN 0.

MQTT 3.1.1 §3.3.1.3: the RETAIN flag is set only on a message sent because
a *new* subscription matches a retained message; "it MUST set the RETAIN
flag to 0 when a PUBLISH Packet is sent to a Client because it matches an
established subscription regardless of how the flag was set in the message
it received" [MQTT-3.3.1-9]. A message queued for an offline session
matched an established subscription. edgebus reads RETAIN 1 as "the last
known state of this topic" and RETAIN 0 as an event, so a queued event
flagged retained would be taken for state.

amqtt 0.12.1 fault: ``Broker._publish_session_retained_messages``, which
sends the queue when the session reconnects, sends every queued message
with ``retain=True``. The fix is that method with ``retain=False``.

Proved by ``tests/conformance/test_delivery.py::test_queued_message_has_retain_0``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.broker import Broker

from broker.amqtt_fixes import mark

__all__ = ["TARGETS", "install"]

TARGETS = ((Broker, "_publish_session_retained_messages"),)


@mark("queued_retain")
async def _publish_session_retained_messages(self: Broker, session: Any) -> None:
    """amqtt's method (it calls the session's queue "retained messages"), with RETAIN 0."""
    handler = self._get_handler(session)
    if handler is None:
        return
    tasks = []
    while not session.retained_messages.empty():
        queued = session.retained_messages.get_nowait()
        tasks.append(asyncio.ensure_future(
            handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)))
    if tasks:
        await asyncio.wait(tasks)


def install() -> None:
    Broker._publish_session_retained_messages = (
        _publish_session_retained_messages)
