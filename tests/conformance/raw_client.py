"""A raw-socket MQTT client for the conformance battery: every byte and every ack is the test's.

Library clients hide what the battery must see (the DUP and RETAIN bits, the
packet id of a redelivered message) and do what it must be able to leave
undone (acknowledge, ping, close the socket). :class:`RawClient` writes the
packets of MQTT 3.1.1 (OASIS standard, 2014) and a minimal MQTT 5 CONNECT by
hand, reads with a deadline, and keeps every packet it has read until a test
takes it, so no wait can miss a packet that arrived while it waited for
another.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CONNACK", "CONNECT", "DISCONNECT", "PINGREQ", "PINGRESP", "PUBACK", "PUBCOMP",
    "PUBLISH", "PUBREC", "PUBREL", "SUBACK", "SUBSCRIBE", "UNSUBACK", "UNSUBSCRIBE",
    "ConnectionClosed", "Packet", "Publish", "RawClient", "Will", "connect_packet",
    "encode_packet", "offline_subscriber",
]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


class ConnectionClosed(AssertionError):
    """The broker closed the connection while the test waited for a packet."""


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        """The id of an ack-type packet (PUBACK .. UNSUBACK), first two bytes of the body."""
        return int(struct.unpack_from("!H", self.body)[0])


@dataclass(frozen=True, slots=True)
class Publish:
    """A PUBLISH as the broker sent it, with its header bits (MQTT 3.1.1 §3.3.1)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None

    @classmethod
    def decode(cls, packet: Packet, mqtt5: bool = False) -> Publish:
        qos = (packet.flags >> 1) & 3
        (length,) = struct.unpack_from("!H", packet.body)
        topic = packet.body[2:2 + length].decode()
        at = 2 + length
        packet_id = None
        if qos:
            (packet_id,) = struct.unpack_from("!H", packet.body, at)
            at += 2
        if mqtt5:
            props, used = _decode_varint(packet.body, at)
            at += used + props
        return cls(topic, packet.body[at:], qos, bool(packet.flags & 1),
                   bool(packet.flags & 8), packet_id)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_varint(data: bytes, at: int) -> tuple[int, int]:
    """``(value, bytes used)`` of the variable byte integer at ``data[at:]``."""
    value, shift, used = 0, 0, 0
    while True:
        byte = data[at + used]
        used += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, used


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def encode_packet(kind: int, flags: int, body: bytes) -> bytes:
    """Fixed header (type, flags, remaining length) + ``body``."""
    return bytes([kind << 4 | flags]) + _varint(len(body)) + body


def connect_packet(client_id: str, *, username: str | None, password: str | None,
                   clean_session: bool = True, keepalive: int = 60,
                   will: Will | None = None, mqtt5: bool = False) -> bytes:
    """A CONNECT (§3.1); with ``mqtt5`` a version 5 CONNECT with empty property lists."""
    flags = 0x02 if clean_session else 0
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _string("MQTT") + bytes([5 if mqtt5 else 4, flags]) + struct.pack("!H", keepalive)
    if mqtt5:
        body += _varint(0)
    body += _string(client_id)
    if will is not None:
        if mqtt5:
            body += _varint(0)
        body += _string(will.topic) + _string(will.payload)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return encode_packet(CONNECT, 0, body)


class RawClient:
    """One TCP connection speaking MQTT 3.1.1 byte by byte.

    With ``auto_ack`` the client acknowledges QoS 1 and 2 deliveries as a
    well-behaved client would; without it, nothing is acknowledged unless the
    test does it, which is how the battery leaves messages in flight.
    """

    def __init__(self, host: str, port: int, client_id: str, *, username: str | None,
                 password: str | None, auto_ack: bool = True, mqtt5: bool = False) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.username, self.password = username, password
        self.auto_ack = auto_ack
        self.mqtt5 = mqtt5
        self.sock: socket.socket | None = None
        self.inbox: list[Packet] = []
        self.closed_by_peer = False
        self._buffer = b""
        self._next_id = 0

    # -- connection --------------------------------------------------------------

    def open(self) -> RawClient:
        self.sock = socket.create_connection((self.host, self.port), timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inbox.clear()
        self._buffer = b""
        self.closed_by_peer = False
        return self

    def connect(self, *, clean_session: bool = True, keepalive: int = 60,
                will: Will | None = None, timeout: float = 5.0) -> tuple[bool, int]:
        """Open, send CONNECT and wait for CONNACK: ``(session present, return code)``."""
        self.open()
        self.send(connect_packet(self.client_id, username=self.username,
                                 password=self.password, clean_session=clean_session,
                                 keepalive=keepalive, will=will, mqtt5=self.mqtt5))
        connack = self.expect(CONNACK, timeout)
        return bool(connack.body[0] & 1), connack.body[1]

    def connected(self, **kwargs: object) -> bool:
        """Connect, insist on return code 0; returns the session-present flag."""
        present, code = self.connect(**kwargs)  # type: ignore[arg-type]
        assert code == 0, f"{self.client_id}: CONNACK return code {code}"
        return present

    def disconnect(self) -> None:
        """A clean DISCONNECT (the will is discarded, §3.14.4), then close."""
        with contextlib.suppress(OSError):
            self.send(encode_packet(DISCONNECT, 0, b""))
        self.drop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a network failure would."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    # -- sending -------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        assert self.sock is not None, f"{self.client_id} is not connected"
        self.sock.sendall(data)

    def new_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def subscribe(self, *filters: tuple[str, int], timeout: float = 5.0) -> list[int]:
        """SUBSCRIBE (§3.8) and wait for its SUBACK; returns the granted QoS codes."""
        packet_id = self.new_id()
        body = struct.pack("!H", packet_id)
        if self.mqtt5:
            body += _varint(0)
        for topic_filter, qos in filters:
            body += _string(topic_filter) + bytes([qos])
        self.send(encode_packet(SUBSCRIBE, 2, body))
        suback = self.expect(SUBACK, timeout, packet_id=packet_id)
        at = 2
        if self.mqtt5:
            props, used = _decode_varint(suback.body, at)
            at += used + props
        return list(suback.body[at:])

    def unsubscribe(self, *filters: str, timeout: float = 5.0) -> None:
        packet_id = self.new_id()
        body = struct.pack("!H", packet_id) + b"".join(_string(f) for f in filters)
        self.send(encode_packet(UNSUBSCRIBE, 2, body))
        self.expect(UNSUBACK, timeout, packet_id=packet_id)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                timeout: float = 5.0) -> None:
        """PUBLISH and complete its QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        flags = qos << 1 | (1 if retain else 0)
        body = _string(topic)
        packet_id = None
        if qos:
            packet_id = self.new_id()
            body += struct.pack("!H", packet_id)
        if self.mqtt5:
            body += _varint(0)
        self.send(encode_packet(PUBLISH, flags, body + payload))
        if qos == 1:
            self.expect(PUBACK, timeout, packet_id=packet_id)
        elif qos == 2:
            self.expect(PUBREC, timeout, packet_id=packet_id)
            self.send(encode_packet(PUBREL, 2, struct.pack("!H", packet_id)))
            self.expect(PUBCOMP, timeout, packet_id=packet_id)

    def ack(self, message: Publish) -> None:
        """The first acknowledgement a receiver owes for ``message`` (PUBACK or PUBREC)."""
        assert message.packet_id is not None
        kind = PUBACK if message.qos == 1 else PUBREC
        self.send(encode_packet(kind, 0, struct.pack("!H", message.packet_id)))

    def ping(self) -> None:
        self.send(encode_packet(PINGREQ, 0, b""))

    # -- receiving -----------------------------------------------------------------

    def _read_packet(self, deadline: float) -> Packet | None:
        """The next packet off the wire, or None at the deadline."""
        assert self.sock is not None, f"{self.client_id} is not connected"
        while True:
            packet = self._parse()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed_by_peer = True
                raise ConnectionClosed(f"{self.client_id}: the broker closed the connection")
            self._buffer += chunk

    def _parse(self) -> Packet | None:
        data = self._buffer
        if len(data) < 2:
            return None
        length, shift, at = 0, 0, 1
        while True:
            if at >= len(data):
                return None
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if len(data) < at + length:
            return None
        self._buffer = data[at + length:]
        return Packet(data[0] >> 4, data[0] & 0x0F, data[at:at + length])

    def _handle(self, packet: Packet) -> None:
        """Keep ``packet`` for the test; with ``auto_ack`` answer what a client must."""
        if self.auto_ack and packet.kind == PUBLISH:
            message = Publish.decode(packet, self.mqtt5)
            if message.qos:
                self.ack(message)
        if self.auto_ack and packet.kind == PUBREL:
            self.send(encode_packet(PUBCOMP, 0, packet.body[:2]))
            return
        self.inbox.append(packet)

    def wait_for(self, wanted: Callable[[Packet], bool], timeout: float) -> Packet | None:
        """The first packet (kept or new) for which ``wanted`` holds; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for index, packet in enumerate(self.inbox):
                if wanted(packet):
                    return self.inbox.pop(index)
            new = self._read_packet(deadline)
            if new is None:
                return None
            self._handle(new)

    def expect(self, kind: int, timeout: float = 5.0, packet_id: int | None = None) -> Packet:
        found = self.wait_for(lambda p: p.kind == kind and (
            packet_id is None or p.packet_id == packet_id), timeout)
        assert found is not None, (f"{self.client_id}: no packet of type {kind} "
                                   f"(id {packet_id}) within {timeout:g} s")
        return found

    def next_publish(self, timeout: float = 5.0, topic: str | None = None) -> Publish | None:
        """The next PUBLISH (on ``topic`` if given), or None after ``timeout``."""
        found = self.wait_for(lambda p: p.kind == PUBLISH and (
            topic is None or Publish.decode(p, self.mqtt5).topic == topic), timeout)
        return None if found is None else Publish.decode(found, self.mqtt5)

    def expect_publish(self, timeout: float = 5.0, topic: str | None = None) -> Publish:
        message = self.next_publish(timeout, topic)
        assert message is not None, (f"{self.client_id}: no PUBLISH"
                                     f"{' on ' + topic if topic else ''} within {timeout:g} s")
        return message

    def publishes_until(self, marker_topic: str, timeout: float = 5.0) -> list[Publish]:
        """Every PUBLISH up to and including the first on ``marker_topic`` (which must come)."""
        got: list[Publish] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_publish(max(0.0, deadline - time.monotonic()))
            assert message is not None, (f"{self.client_id}: marker {marker_topic} not "
                                         f"received within {timeout:g} s (got {got})")
            got.append(message)
            if message.topic == marker_topic:
                return got

    def wait_closed(self, timeout: float) -> bool:
        """True once the broker has closed the connection (PUBLISHes before it are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while (packet := self._read_packet(deadline)) is not None:
                self._handle(packet)
        except ConnectionClosed:
            return True
        return False

    def close(self) -> None:
        self.drop()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def offline_subscriber(client: Callable[..., RawClient], topic: str) -> RawClient:
    """Client "sub" with a persistent session subscribed to ``topic`` at QoS 1, now disconnected:
    what is published to ``topic`` meanwhile is queued for it."""
    sub = client("sub")
    sub.connected(clean_session=False)
    sub.subscribe((topic, 1))
    sub.disconnect()
    return sub
