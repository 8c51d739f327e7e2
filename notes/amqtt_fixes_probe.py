"""Probe, not product: how much of amqtt 0.12.1's failures a thin layer of patches can fix.

Superseded by ``broker/amqtt_fixes`` (applied by the embedded broker itself),
which grew out of it; kept as the record of the measurement in
``notes/broker-choice.md``. It no longer runs: the product layer refuses to
wrap methods someone else has already replaced, and this probe replaces them
before it starts the embedded broker.

Runs the embedded broker (``broker.embedded.EmbeddedBroker``, credentials as
given) after wrapping nine private amqtt methods, so the conformance battery
can measure the result as candidate ``amqtt_fixed``::

    python notes/amqtt_fixes_probe.py HOST PORT USER PASSWORD DATA_DIR

None of this goes through amqtt's plugin API: plugins only get events
(connected, subscribed, message received, ...), and none fires for a
PINGREQ or lets a plugin change a delivery's QoS or flags. Every fix below
leans on private names of amqtt 0.12.1 and would have to be re-checked on
each amqtt release; the right home for them is upstream.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import signal
import sys
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.session import OUTGOING

from broker.credentials import Credentials
from broker.embedded import EmbeddedBroker

_PUBLISH_QOS: contextvars.ContextVar[int | None] = contextvars.ContextVar("publish_qos",
                                                                         default=None)
_RESUMING: contextvars.ContextVar[bool] = contextvars.ContextVar("resuming", default=False)


# 1. Keepalive (MQTT-3.1.2-24). The reader already times out after keep_alive
#    seconds of silence and calls handle_read_timeout, which amqtt leaves empty.
#    Make the timeout 1.5 x keepalive and end the connection as a network
#    failure would (the broker then publishes the will).
def _handle_read_timeout(self: BrokerProtocolHandler) -> None:
    waiter = self._disconnect_waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


_initialize_client_session = Broker._initialize_client_session


async def _initialize_with_grace(self: Broker, *args: Any) -> Any:
    handler, session = await _initialize_client_session(self, *args)
    if session.keep_alive > 0:
        session.keep_alive = math.ceil(session.keep_alive * 1.5)
    # 5. (below) remember which handler took the session over.
    session.edgebus_handler = handler
    return handler, session


# 2. QoS downgrade (MQTT-3.8.4): amqtt sends at the subscription's QoS. Its
#    broadcast loop reads broadcast.get("qos", sub_qos); answer min(publish, sub).
class _Broadcast(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        if key == "qos" and "qos" not in self and self.get("publish_qos") is not None:
            return min(self["publish_qos"], default)
        return super().get(key, default)


async def _broadcast_message(self: Broker, session: Any, topic: Any, data: Any,
                             force_qos: int | None = None) -> None:
    broadcast = _Broadcast(session=session, topic=topic, data=data,
                           publish_qos=_PUBLISH_QOS.get())
    if force_qos is not None:
        broadcast["qos"] = force_qos
    await self._broadcast_queue.put(broadcast)


_handle_message_delivery = Broker._handle_message_delivery


async def _delivery_with_qos(self: Broker, client_session: Any, handler: Any,
                             wait_deliver: Any) -> bool:
    message = wait_deliver.result()
    token = _PUBLISH_QOS.set(getattr(message, "qos", None))
    try:
        return bool(await _handle_message_delivery(self, client_session, handler, wait_deliver))
    finally:
        _PUBLISH_QOS.reset(token)


# 3. Queued messages are flagged retained; they matched an established
#    subscription, so RETAIN must be 0 (MQTT-3.3.1-9). Same loop, one flag.
async def _publish_session_queue(self: Broker, session: Any) -> None:
    handler = self._get_handler(session)
    tasks = []
    if handler:
        while not session.retained_messages.empty():
            queued = await session.retained_messages.get()
            tasks.append(asyncio.ensure_future(
                handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)))
    if tasks:
        await asyncio.wait(tasks)
    # 4. What amqtt does next on connect is send the retained messages of every
    #    client's subscriptions; retained messages are for new subscriptions only.
    _RESUMING.set(True)


_publish_retained_for_subscription = Broker._publish_retained_messages_for_subscription


async def _retained_for_new_subscription(self: Broker, subscription: Any, session: Any) -> None:
    if _RESUMING.get():
        return
    await _publish_retained_for_subscription(self, subscription, session)


_client_message_loop = Broker._client_message_loop


async def _message_loop(self: Broker, client_session: Any, handler: Any) -> None:
    _RESUMING.set(False)
    await _client_message_loop(self, client_session, handler)


# 5. Take-over: the replaced connection's loop ends after the new one is set up
#    and marks the shared session disconnected, so nothing is delivered live
#    until the next reconnect. A loop whose handler no longer owns the session
#    only stops its handler.
_handle_disconnect = Broker._handle_disconnect


async def _disconnect_unless_replaced(self: Broker, client_session: Any, handler: Any,
                                      disconnect_waiter: Any) -> None:
    owner = getattr(client_session, "edgebus_handler", handler)
    if owner is not handler:
        await self._stop_handler(handler)
        return
    await _handle_disconnect(self, client_session, handler, disconnect_waiter)


# 6. Redelivery (MQTT-4.4.0-1): amqtt drops an outgoing QoS 1 message from the
#    session's in-flight table when its PUBACK has not come within 5 s or the
#    connection ends, so the resend on reconnect (which amqtt does have, with
#    DUP) finds nothing. Put an unacknowledged message back. (QoS 2 has the same
#    flaw in a longer flow; not patched here.)
_qos1_flow = ProtocolHandler._handle_qos1_message_flow


async def _qos1_flow_keeping_unacked(self: ProtocolHandler, app_message: Any) -> None:
    try:
        await _qos1_flow(self, app_message)
    except (TimeoutError, asyncio.CancelledError):
        if app_message.direction == OUTGOING and app_message.puback_packet is None:
            self.session.inflight_out[app_message.packet_id] = app_message
        raise


def apply() -> None:
    BrokerProtocolHandler.handle_read_timeout = _handle_read_timeout
    Broker._initialize_client_session = _initialize_with_grace
    Broker._broadcast_message = _broadcast_message
    Broker._handle_message_delivery = _delivery_with_qos
    Broker._publish_session_retained_messages = _publish_session_queue
    Broker._publish_retained_messages_for_subscription = (
        _retained_for_new_subscription)
    Broker._client_message_loop = _message_loop
    Broker._handle_disconnect = _disconnect_unless_replaced
    ProtocolHandler._handle_qos1_message_flow = (
        _qos1_flow_keeping_unacked)


def main() -> None:
    host, port, user, password, data_dir = sys.argv[1:6]
    apply()
    broker = EmbeddedBroker(host=host, port=int(port), data_dir=Path(data_dir),
                            credentials=[Credentials(user, password)])
    broker.start()
    stop = asyncio.Event()

    async def wait() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(wait())
    broker.stop()


if __name__ == "__main__":
    main()
