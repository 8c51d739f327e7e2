"""Log-in first: a CONNECT with a wrong password is refused before it can touch any session.

MQTT 3.1.1 §3.1.4: the server performs authentication, and "if validation
is successful" it goes on to the session steps - disconnecting the existing
client with that id, resuming or discarding its session [MQTT-3.1.4-2,
-3]; a CONNECT it refuses gets its CONNACK and a closed connection
(§3.2.2.3), nothing more. For edgebus a device id, and so its client id,
is no secret; a broker that lets anyone who knows it disturb the device is
a broker where one misconfigured or hostile client takes a device off the
bus.

amqtt 0.12.1 fault: it looks the client id up, and updates the existing
session with the new CONNECT's will, keepalive and user (or, for a clean
session, deletes the existing session), then checks the password, then
takes the connection over whatever the result, registering the refused
connection in the client's place: the connected client stops getting its
messages (measured with ``tests/conformance``).

The fix: ``BrokerProtocolHandler.init_from_connect``, which reads the
CONNECT, runs the authentication plugins on it right away; a refused
CONNECT gets CONNACK 5 (not authorised) and is closed there, the way amqtt
refuses a CONNECT it cannot parse, and never reaches the session steps.
``Broker._authenticate``, which amqtt calls later, then knows the answer
(the password is checked once).

Proved by ``tests/conformance/test_sessions.py::test_refused_connect_leaves_the_connected_client_alone``
and ``tests/test_embedded_broker.py::test_wrong_password_and_anonymous_are_refused``.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import MQTTError
from amqtt.events import MQTTEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from broker.amqtt_fixes import mark

__all__ = ["TARGETS", "install"]

logger = logging.getLogger(__name__)

TARGETS = ((BrokerProtocolHandler, "init_from_connect"), (Broker, "_authenticate"))

#: This connection's CONNECT passed the authentication plugins (the connection's task).
_AUTHENTICATED: contextvars.ContextVar[bool] = contextvars.ContextVar("edgebus_authenticated",
                                                                     default=False)


async def _check(plugins_manager: Any, session: Any) -> bool:
    """amqtt's rule (``Broker._authenticate``): every plugin that answers must say yes."""
    answers = await plugins_manager.map_plugin_auth(session=session)
    results = [r for r in (answers or {}).values() if r is not None]
    return bool(results) and all(results)


def install() -> None:
    init_from_connect = BrokerProtocolHandler.init_from_connect.__func__
    authenticate = Broker._authenticate

    @mark("authenticate_first")
    async def _init_from_connect(cls: Any, reader: Any, writer: Any, plugins_manager: Any,
                                 loop: Any = None) -> Any:
        handler, session = await init_from_connect(cls, reader, writer, plugins_manager, loop)
        if not await _check(plugins_manager, session):
            connack = ConnackPacket.build(0, NOT_AUTHORIZED)
            await plugins_manager.fire_event(MQTTEvents.PACKET_SENT, packet=connack)
            await connack.to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {session.client_id!r} refused: not authorised")
        _AUTHENTICATED.set(True)
        return handler, session

    @mark("authenticate_first")
    async def _authenticate(self: Broker, session: Any, listener: Any) -> bool:
        if _AUTHENTICATED.get():
            return True
        return bool(await authenticate(self, session, listener))

    BrokerProtocolHandler.init_from_connect = classmethod(_init_from_connect)
    Broker._authenticate = _authenticate
