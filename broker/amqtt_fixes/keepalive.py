"""Keepalive: a client silent for 1.5 x its keepalive is cut off, and its will goes out.

MQTT 3.1.1 §3.1.2.10 [MQTT-3.1.2-24]: "If the Keep Alive value is non-zero
and the Server does not receive a Control Packet from the Client within one
and a half times the Keep Alive time period, it MUST disconnect the Network
Connection to the Client as if the network had failed", and §3.1.2.5 makes
that one of the cases that publish the will. It is how edgebus notices a
device that lost power or network: its socket never closes.

amqtt 0.12.1 fault: each connection's reader already waits for the next
packet with the keepalive as its time limit, and calls
``BrokerProtocolHandler.handle_read_timeout`` when it runs out - which does
nothing, so a silent client stays connected for ever (measured: still open
after 20 s with keepalive 5 s). The fix makes the reader's limit 1.5 x the
keepalive (``Broker._initialize_client_session`` sets it on the session,
where the reader reads it) and ends the connection in ``handle_read_timeout``
the way a dropped socket ends it: the transport is aborted (a graceful close
would wait for a client that reads nothing) and amqtt's loop is told the
connection is gone; it then publishes the will.

Proved by ``tests/conformance/test_will.py`` (will after silence, no cut-off
while pinging) and ``tests/test_presence.py`` (an agent stopped with SIGSTOP).
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from broker.amqtt_fixes import mark
from broker.amqtt_fixes.connection import abort_connection

__all__ = ["GRACE", "TARGETS", "install"]

logger = logging.getLogger(__name__)

#: §3.1.2.10: the broker waits one and a half keepalives before it gives up on a client.
GRACE = 1.5

TARGETS = ((BrokerProtocolHandler, "handle_read_timeout"), (Broker, "_initialize_client_session"))


@mark("keepalive")
def _handle_read_timeout(self: BrokerProtocolHandler) -> None:
    """End the connection as a network failure would: the broker's loop then sends the will."""
    waiter = self._disconnect_waiter
    if waiter is not None and not waiter.done():
        client_id = self.session.client_id if self.session is not None else None
        logger.info("client %s sent nothing for 1.5 x its keepalive; disconnecting it", client_id)
        abort_connection(self)
        waiter.set_result(None)


def install() -> None:
    initialize = Broker._initialize_client_session

    @mark("keepalive")
    async def _initialize_client_session(self: Broker, *args: Any, **kwargs: Any) -> Any:
        handler, session = await initialize(self, *args, **kwargs)
        # The reader waits session.keep_alive seconds for the next packet. A float is
        # fine there and keeps 1.5 x exact (7.5 s for keepalive 5, not 8).
        if session.keep_alive > 0:
            session.keep_alive = session.keep_alive * GRACE
        return handler, session

    BrokerProtocolHandler.handle_read_timeout = _handle_read_timeout
    Broker._initialize_client_session = _initialize_client_session
