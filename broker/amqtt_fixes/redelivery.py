"""Redelivery: what a persistent session had not acknowledged is resent, DUP set, on reconnect.

MQTT 3.1.1 §4.4: "When a Client reconnects with CleanSession set to 0, both
the Client and Server MUST re-send any unacknowledged PUBLISH Packets (where
QoS > 0) and PUBREL Packets using their original Packet Identifiers"
[MQTT-4.4.0-1], with DUP 1 on a resent PUBLISH (§3.3.1.1). It is half of
"nothing accepted is lost": a message the broker had sent when the
connection broke is not lost with it.

amqtt 0.12.1 fault: it has the resend (``ProtocolHandler._retry_deliveries``
runs over the session's in-flight table when a connection starts, DUP set),
but its QoS 1 and QoS 2 flows take a message out of that table when the
acknowledgement has not come within 5 s or the connection ends - in a
``finally``, acknowledged or not - and a QoS 2 message leaves it as soon as
its PUBREC arrives, before PUBREL/PUBCOMP. So the resend finds nothing.

The fix, on the broker's handler only (the client shares the base class):

* the outgoing QoS 1 and QoS 2 flows put a message back into the session's
  in-flight table when they end without its final acknowledgement (PUBACK;
  PUBCOMP), so the next connection resends it: the PUBLISH with DUP 1, or
  the PUBREL if PUBREC had come; the flow then ends quietly (amqtt logged a
  timeout as a failed task);
* an acknowledgement that comes after the flow stopped waiting (a slow
  client, over 5 s) still counts: a late PUBACK or PUBCOMP takes its message
  out of the table, a late PUBREC gets its PUBREL;
* stopping a handler waits (briefly) for its flows to finish, so that a
  take-over's new connection, which amqtt starts right after stopping the
  old one, finds the messages back in the table.

Not kept: messages in flight when the broker itself stops are written to the
store by :mod:`broker.amqtt_session_store` on a clean stop only.

Proved by ``tests/conformance/test_sessions.py``:
``test_unacknowledged_message_redelivered_with_dup`` (QoS 1 and 2),
``test_unacknowledged_pubrel_resent`` and
``test_takeover_redelivers_in_flight_message``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OUTGOING

from broker.amqtt_fixes import mark

__all__ = ["FLOW_SETTLE_TIMEOUT", "TARGETS", "install"]

logger = logging.getLogger(__name__)

#: How long stopping a handler waits for its message flows to put messages back.
FLOW_SETTLE_TIMEOUT = 1.0

TARGETS = (
    (BrokerProtocolHandler, "_handle_qos1_message_flow"),
    (BrokerProtocolHandler, "_handle_qos2_message_flow"),
    (BrokerProtocolHandler, "handle_puback"),
    (BrokerProtocolHandler, "handle_pubrec"),
    (BrokerProtocolHandler, "handle_pubcomp"),
    (BrokerProtocolHandler, "stop"),
)

_FLOWS = "_edgebus_flows"

Flow = Callable[[Any, Any], Awaitable[None]]


def _flows(handler: Any) -> set[asyncio.Task[Any]]:
    """The outgoing message flows running on ``handler`` (kept on the handler)."""
    flows: set[asyncio.Task[Any]] | None = getattr(handler, _FLOWS, None)
    if flows is None:
        flows = set()
        setattr(handler, _FLOWS, flows)
    return flows


def _qos1_done(message: Any) -> bool:
    return message.puback_packet is not None


def _qos2_done(message: Any) -> bool:
    return message.pubcomp_packet is not None


def _keeping_unacknowledged(flow: Flow, done: Callable[[Any], bool]) -> Flow:
    """``flow`` that puts an outgoing message it could not finish back in the in-flight table."""

    @mark("redelivery")
    async def keeping(self: Any, app_message: Any) -> None:
        if app_message.direction != OUTGOING:
            await flow(self, app_message)
            return
        task = asyncio.current_task()
        flows = _flows(self)
        if task is not None:
            flows.add(task)
        try:
            await flow(self, app_message)
        except (TimeoutError, asyncio.CancelledError):
            session = self.session
            if session is not None and app_message.packet_id is not None \
                    and not done(app_message):
                session.inflight_out[app_message.packet_id] = app_message
            if task is not None and task.cancelling():
                raise  # this task itself is being cancelled (shutdown): let it end
            logger.debug("message %s to %s not acknowledged; kept for redelivery",
                         app_message.packet_id, session.client_id if session else None)
        finally:
            if task is not None:
                flows.discard(task)

    return keeping


def _unawaited(handler: Any, waiters: str, packet: Any) -> Any:
    """The in-flight message ``packet`` acknowledges if no flow waits for it any more, else None."""
    packet_id = getattr(getattr(packet, "variable_header", None), "packet_id", None)
    session = handler.session
    if packet_id is None or session is None or packet_id in getattr(handler, waiters):
        return None
    return session.inflight_out.get(packet_id)


def _late_puback(handle: Callable[[Any, Any], Awaitable[None]]) -> Callable[[Any, Any], Awaitable[None]]:
    @mark("redelivery")
    async def handle_puback(self: Any, puback: Any) -> None:
        message = _unawaited(self, "_puback_waiters", puback)
        if message is not None and message.qos == 1:
            del self.session.inflight_out[message.packet_id]
            return
        await handle(self, puback)

    return handle_puback


def _late_pubrec(handle: Callable[[Any, Any], Awaitable[None]]) -> Callable[[Any, Any], Awaitable[None]]:
    @mark("redelivery")
    async def handle_pubrec(self: Any, pubrec: Any) -> None:
        message = _unawaited(self, "_pubrec_waiters", pubrec)
        if message is not None and message.qos == 2 and message.pubrel_packet is None:
            # Go on where the flow stopped: amqtt's flow sends PUBREL and waits for
            # PUBCOMP when it finds a PUBREL already made.
            message.pubrec_packet = pubrec
            message.pubrel_packet = PubrelPacket.build(message.packet_id)
            await self._handle_qos2_message_flow(message)
            return
        await handle(self, pubrec)

    return handle_pubrec


def _late_pubcomp(handle: Callable[[Any, Any], Awaitable[None]]) -> Callable[[Any, Any], Awaitable[None]]:
    @mark("redelivery")
    async def handle_pubcomp(self: Any, pubcomp: Any) -> None:
        message = _unawaited(self, "_pubcomp_waiters", pubcomp)
        if message is not None and message.qos == 2 and message.pubrel_packet is not None:
            del self.session.inflight_out[message.packet_id]
            return
        await handle(self, pubcomp)

    return handle_pubcomp


def _waiting_for_flows(stop: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    @mark("redelivery")
    async def stopping(self: Any) -> None:
        await stop(self)
        current = asyncio.current_task()
        pending = [t for t in _flows(self) if t is not current and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=FLOW_SETTLE_TIMEOUT)

    return stopping


def install() -> None:
    handler = BrokerProtocolHandler
    handler._handle_qos1_message_flow = _keeping_unacknowledged(
        handler._handle_qos1_message_flow, _qos1_done)
    handler._handle_qos2_message_flow = _keeping_unacknowledged(
        handler._handle_qos2_message_flow, _qos2_done)
    handler.handle_puback = _late_puback(handler.handle_puback)
    handler.handle_pubrec = _late_pubrec(handler.handle_pubrec)
    handler.handle_pubcomp = _late_pubcomp(handler.handle_pubcomp)
    handler.stop = _waiting_for_flows(handler.stop)
