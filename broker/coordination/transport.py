"""PeerTransport: a lean MQTT connection for Raft traffic (no outbox, QoS 0 by default).

:class:`broker.session.BusSession` promises that nothing accepted is lost: every
publish goes through its SQLite outbox and waits for a PUBACK, and it speaks
MQTT 5 where it can. Raft needs none of that: a lost AppendRequest, vote or
client reply is re-sent by the protocol (heartbeats, client retries), and
persistence is the log's job, not the transport's. Profiling a node under the
lock benchmark showed most of its CPU going to exactly that machinery (outbox
insert/peek/ack, PUBACKs both ways, MQTT 5 property parsing), so the driver
talks through this instead: MQTT 3.1.1, QoS 0 for peer messages and replies,
TCP_NODELAY, exact-topic dispatch, reconnect with backoff. It keeps the
presence contract of a device session: a retained ``offline`` will on the
presence topic, ``online`` (retained) on every connection, ``offline`` said
explicitly on a clean stop (which suppresses the will).

:class:`broker.coordination.LockClient` uses it too (its requests are retried
until answered, so QoS 0 loses nothing that matters). Handlers run on the
transport's network thread: keep them short.

``start(threaded=False)`` runs no thread at all: the owner drives the
connection with :meth:`PeerTransport.poll` from its own loop, so handlers run
on the owner's thread and an inbound message reaches it with no thread
hand-off, and its publishes do not contend with a network thread for the GIL
(the Raft driver does this: profiling its commit path showed each hop losing
0.1-0.4 ms to the hand-off).
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.router import ReceivedMessage
from broker.session import BusConfig
from schemas.topics import TopicTree

__all__ = ["PeerTransport"]

logger = logging.getLogger(__name__)

Handler = Callable[[ReceivedMessage], None]


class PeerTransport:
    """One MQTT 3.1.1 connection with a background network thread (thread-safe publish)."""

    def __init__(self, bus: BusConfig, client_id: str, *, presence_topic: str | None = None) -> None:
        self.bus = bus
        self._tls = bus.tls_context()
        self.client_id = client_id
        self.presence_topic = presence_topic
        self.topics = TopicTree(bus.root)
        self._handlers: dict[str, Handler] = {}
        self._wildcards: dict[str, Handler] = {}  # filters with + or #, tried after the exact topics
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._inline = False
        self._retry_at = 0.0
        self._delay = bus.reconnect_min_delay
        self.dropped = 0

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver messages on ``topic`` to ``handler``; call before :meth:`start`.

        An exact topic is looked up in a dict (the hot path); a filter with
        ``+`` or ``#`` (a node's ``req/+`` lanes) is matched after it.
        """
        if "+" in topic or "#" in topic:
            self._wildcards[topic] = handler
        else:
            self._handlers[topic] = handler
        client = self._client
        if client is not None and self._connected.is_set():
            client.subscribe(topic, 0)

    def start(self, *, threaded: bool = True) -> PeerTransport:
        """Connect from a background thread, or (``threaded=False``) from the owner's :meth:`poll` calls."""
        if not threaded:
            self._inline = True
            return self
        self._thread = threading.Thread(target=self._supervise, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()
        return self

    def poll(self, timeout: float, max_packets: int = 512) -> None:
        """Inline mode: wait up to ``timeout`` for traffic and handle what arrived (up to
        ``max_packets`` messages), (re)connecting when needed. Handlers run here, on the caller's thread."""
        client = self._client
        if client is None:
            now = time.monotonic()
            if now < self._retry_at:
                self._stopping.wait(min(timeout, self._retry_at - now))
                return
            client = self._connect()
            if client is None:
                self._retry_at = now + self._delay * (0.5 + self._rng.random())
                self._delay = min(self._delay * 2, self.bus.reconnect_max_delay)
                return
            self._delay = self.bus.reconnect_min_delay
            self._begin(client)
            return
        if client.loop(timeout=timeout) != mqtt.MQTT_ERR_SUCCESS:
            self._lost(client)
            return
        sock = client.socket()
        for _ in range(max_packets - 1):  # whatever else is already buffered, without blocking
            if not isinstance(sock, socket.socket) or not select.select([sock], [], [], 0)[0]:
                break
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                self._lost(client)
                return

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False) -> bool:
        """Send now if connected; False (counted in :attr:`dropped`) if not. Raft re-sends what matters."""
        client = self._client
        if client is None or not self._connected.is_set():
            self.dropped += 1
            return False
        info = client.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.dropped += 1
            return False
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Inline mode: call it from the owner's thread once it stopped polling."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout + 1.0)
            self._thread = None
        elif self._inline and self._client is not None:
            self._connected.clear()
            self._goodbye(self._client)
            self._client = None

    # -- network thread ------------------------------------------------------------------------

    def _supervise(self) -> None:
        delay = self.bus.reconnect_min_delay
        while not self._stopping.is_set():
            client = self._connect()
            if client is None:
                self._stopping.wait(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, self.bus.reconnect_max_delay)
                continue
            delay = self.bus.reconnect_min_delay
            self._serve(client)

    def _connect(self) -> mqtt.Client | None:
        cfg = self.bus
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                             clean_session=True, reconnect_on_failure=False)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(max(cfg.max_inflight, 1000))
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self.presence_topic is not None:
            client.will_set(self.presence_topic, b"offline", qos=1, retain=True)
        connack = threading.Event()
        refused: list[str] = []

        def on_connect(c: mqtt.Client, u: object, flags: object, rc: ReasonCode, props: object) -> None:
            if rc.is_failure:
                refused.append(str(rc))
            connack.set()

        client.on_connect = on_connect
        client.on_message = self._on_message
        try:
            client.connect(cfg.host, cfg.port, cfg.keepalive)
        except (OSError, ValueError) as exc:
            logger.debug("cannot reach broker %s:%d: %s", cfg.host, cfg.port, exc)
            return None
        deadline_loops = int(cfg.connect_timeout / 0.05) + 1
        for _ in range(deadline_loops):
            if connack.is_set() or client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        if not connack.is_set() or refused:
            logger.warning("broker %s:%d: %s", cfg.host, cfg.port, refused[0] if refused else "no CONNACK")
            _close(client)
            return None
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def _serve(self, client: mqtt.Client) -> None:
        self._begin(client)
        while not self._stopping.is_set():
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._stopping.is_set():
            self._connected.clear()
            self._goodbye(client)
            self._client = None
        else:
            self._lost(client)

    def _begin(self, client: mqtt.Client) -> None:
        for topic in [*self._handlers, *self._wildcards]:
            client.subscribe(topic, 0)
        if self.presence_topic is not None:
            client.publish(self.presence_topic, b"online", qos=1, retain=True)
        self._client = client
        self._connected.set()

    def _lost(self, client: mqtt.Client) -> None:
        self._connected.clear()
        logger.warning("connection to %s:%d lost; reconnecting", self.bus.host, self.bus.port)
        _close(client)
        self._client = None

    def _goodbye(self, client: mqtt.Client) -> None:
        """A clean DISCONNECT suppresses the will, so say ``offline`` ourselves first."""
        if self.presence_topic is not None:
            info = client.publish(self.presence_topic, b"offline", qos=1, retain=True)
            for _ in range(40):
                if info.is_published() or client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        _close(client)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        handler = self._handlers.get(msg.topic)
        if handler is None:
            handler = next((h for f, h in self._wildcards.items() if mqtt.topic_matches_sub(f, msg.topic)),
                           None)
        if handler is None:
            return
        try:
            handler(ReceivedMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
        except Exception:
            logger.exception("handler for %s failed", msg.topic)


def _close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
    except Exception:  # paho raises assorted errors on a dead socket
        logger.debug("closing a dead connection raised", exc_info=True)
