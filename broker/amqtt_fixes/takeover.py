"""Take-over: a new connection with a connected client's id takes its session, and gets it live.

MQTT 3.1.1 §3.1.4: "If the ClientId represents a Client already connected
to the Server then the Server MUST disconnect the existing Client"
[MQTT-3.1.4-2], and with CleanSession 0 the session goes on with the new
connection. This is every reconnect after a network drop that the old
socket did not notice: the device is back, on a new connection, before the
broker has given up on the old one.

amqtt 0.12.1 fault: it closes the old connection, registers the new one -
and then the old connection's message loop finishes as after any drop: it
publishes the old connection's will (the device reads ``offline`` although
it is connected) and marks the shared session disconnected, so everything
for the new connection is queued instead of delivered until its next
reconnect (measured: no live message in 7 to 8 of 10 take-overs).
Mosquitto 2.0 sends no will for a take-over and delivers live. When the new
connection asks for a clean session, amqtt drops the old session but leaves
the old connection open; once the keepalive fix cuts it, its will (say
``offline``) would land after the new connection's ``online``.

The fix: ``Broker._authenticate`` (the last step before amqtt takes over)
marks the old connection's handler as replaced once the new connection has
logged in, and aborts its transport (amqtt's graceful close would wait,
holding up the new connection, for an old socket that may be dead with its
buffers full), and ``Broker._handle_disconnect`` leaves the session alone for a
replaced handler: it only stops that handler - no will, no disconnect. The
check is made again after the handler has stopped, because the old
connection may have been ending on its own at that moment. For a
clean-session take-over, ``Broker._delete_session`` notes the connection it
orphans, and ``Broker._authenticate`` ends it the same way. (A connection
that fails to log in never gets this far: :mod:`.authenticate_first`.)

Proved by ``tests/conformance/test_sessions.py``:
``test_takeover_keeps_session_and_delivers_live`` and
``test_takeover_does_not_publish_the_will`` (10 take-overs each),
``test_clean_session_takeover_closes_the_old_connection``;
``test_takeover_redelivers_in_flight_message`` also needs :mod:`.redelivery`.
"""

from __future__ import annotations

import contextvars
from typing import Any

from amqtt.broker import Broker
from amqtt.events import BrokerEvents
from amqtt.mqtt.disconnect import DisconnectPacket

from broker.amqtt_fixes import mark
from broker.amqtt_fixes.connection import abort_connection

__all__ = ["TARGETS", "install", "replaced"]

TARGETS = ((Broker, "_authenticate"), (Broker, "_handle_disconnect"), (Broker, "_delete_session"))

#: Attribute set on the protocol handler of a connection another one took over.
_REPLACED = "_edgebus_replaced"

#: The live handler a clean-session CONNECT's session lookup orphaned (this connection's task).
_ORPHANED: contextvars.ContextVar[Any] = contextvars.ContextVar("edgebus_orphaned", default=None)


def replaced(handler: Any) -> bool:
    """Whether a newer connection with the same client id has taken ``handler``'s session."""
    return bool(getattr(handler, _REPLACED, False))


@mark("takeover")
async def _handle_disconnect(self: Broker, client_session: Any, handler: Any,
                             disconnect_waiter: Any) -> None:
    """amqtt's method, except for a connection that was taken over (see the module docstring)."""
    if not replaced(handler):
        result = disconnect_waiter.result()
        if (result is None or not isinstance(result, DisconnectPacket)) and client_session.will_flag:
            await self._broadcast_message(client_session, client_session.will_topic,
                                          client_session.will_message, client_session.will_qos)
            if client_session.will_retain:
                await self.retain_message(client_session, client_session.will_topic,
                                          client_session.will_message, client_session.will_qos)
    await self._stop_handler(handler)
    if replaced(handler):
        return
    client_session.transitions.disconnect()
    await self.plugins_manager.fire_event(BrokerEvents.CLIENT_DISCONNECTED,
                                          client_id=client_session.client_id,
                                          client_session=client_session)


def _take_over(handler: Any) -> None:
    setattr(handler, _REPLACED, True)
    abort_connection(handler)


def install() -> None:
    authenticate = Broker._authenticate
    delete_session = Broker._delete_session

    @mark("takeover")
    async def _delete_session(self: Broker, client_id: str) -> None:
        old_session, old_handler = self.sessions.get(client_id, (None, None))
        if old_session is not None and old_session.transitions.is_connected():
            _ORPHANED.set(old_handler)
        await delete_session(self, client_id)

    @mark("takeover")
    async def _authenticate(self: Broker, session: Any, listener: Any) -> bool:
        authenticated = await authenticate(self, session, listener)
        if not authenticated:
            return False
        orphaned = _ORPHANED.get()
        if orphaned is not None:
            _ORPHANED.set(None)
            _take_over(orphaned)
            await orphaned.handle_connection_closed()  # its loop ends, as a take-over's would
        elif session.transitions.is_connected():
            # amqtt takes the session over right after this returns, without awaiting
            # in between: the handler it replaces is the one registered now.
            _session, live_handler = self.sessions.get(session.client_id, (None, None))
            if live_handler is not None:
                _take_over(live_handler)
        return True

    Broker._authenticate = _authenticate
    Broker._delete_session = _delete_session
    Broker._handle_disconnect = _handle_disconnect
