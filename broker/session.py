"""The client session every edgebus process uses to talk to the broker.

What it promises:

* **Nothing accepted is lost.** :meth:`BusSession.publish` writes the message
  to the :class:`~broker.outbox.Outbox` before returning ``True``; the row is
  deleted only after the broker acknowledged it. A broker restart, a cut or a
  killed process only delays it. A refusal (outbox full) returns ``False`` and
  is counted.
* **Presence.** A device session connects with a retained ``offline`` will on
  ``{root}/{device}/status``, and on every connection publishes ``online`` and
  its birth record (retained) before anything queued.
* **Reconnect outside the connection.** Each connection is a fresh paho client
  driven by one supervisor thread; when it dies the supervisor waits
  (exponential backoff with jitter) and builds a new one, resubscribes every
  route, and re-sends whatever the outbox still holds, oldest first. Keeping
  retransmission in one place (the outbox) rather than also in paho's memory
  is what makes the "re-sent once, in order" rule hold.
* **Until the coordinator has it** (``end_to_end_ack``). A broker's PUBACK
  only says the broker has a message, and a broker killed before it saved its
  store loses it. A message that carries sequenced samples (its
  :class:`~broker.outbox.SequenceSpan`) therefore stays in the outbox after the
  PUBACK, marked delivered, until the coordinator's acknowledgement on
  ``{root}/{device}/cmd/stored`` (:mod:`schemas.stored_ack`) says its samples
  are stored. Delivered rows still unconfirmed ``ack_timeout`` seconds later
  are sent again when an acknowledgement shows the coordinator is alive but
  skipped them, otherwise on a timer whose pause doubles with each try (up to
  64 x ``ack_timeout``), and every unconfirmed row is sent again after a
  reconnect (the coordinator's exactly-once accounting drops what it had). ``"required"``
  always waits; ``"auto"`` (the default) waits once this device has received an
  acknowledgement, ever (remembered in the outbox), so a device whose
  coordinator does not acknowledge behaves as before; ``"off"`` never waits.
* **Persistent sessions** (``clean_start=False`` with a stable client id, and a
  session expiry under MQTT 5) so the broker queues QoS 1 messages for a
  subscriber that is briefly away.
* **MQTT 5 where the broker speaks it.** ``protocol="auto"`` tries MQTT 5 and
  falls back to 3.1.1 (the embedded amqtt broker speaks only 3.1.1); under
  MQTT 5 a message's content type travels as a property. Nothing depends on it.

Handlers registered with :meth:`BusSession.subscribe` run on the session's
network thread: keep them short or hand work to a queue. The route that
:meth:`~BusSession.subscribe` returns can wait for the broker's SUBACK
(:meth:`~broker.router.Route.wait_subscribed`).

* **A refused subscription is asked for again.** A SUBACK failure (an ACL
  that changes later, a broker cluster regaining its quorum after a node died)
  marks the filter's routes refused (a wait raises
  :class:`~schemas.errors.SubscriptionRefused`), logs the refusal, lists the
  filter in :attr:`SessionStats.refused_subscriptions` and sends the SUBSCRIBE
  again on the network thread after ``subscribe_retry_min_delay`` seconds,
  doubling up to ``subscribe_retry_max_delay`` (jittered by the session's
  random source; :mod:`broker.subscription_retry`), until the broker grants it,
  the filter is unsubscribed, the session stops, or a reconnect subscribes
  everything afresh. When the refused filter was the device's stored
  acknowledgements, a late grant sends every unconfirmed row again, as a
  reconnect does: the acknowledgements published meanwhile never came.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.buffered_socket import BufferedSocket
from broker.config_values import check_section_keys
from broker.outbox import Outbox, OutboxMessage, OutboxRow, OutboxTransaction
from broker.paho_client import FewerSyscallsClient
from broker.router import Handler, ReceivedMessage, Route, SubscriptionRouter
from broker.subscription_retry import RefusedSubscriptions
from broker.tls.client import client_tls_context
from schemas.errors import BusError, CodecError, ConfigError, TopicError
from schemas.stored_ack import StoredAck
from schemas.topics import TopicTree, validate_device_id, validate_publish_topic

__all__ = ["BusConfig", "BusSession", "SessionStats"]

logger = logging.getLogger(__name__)

ENVELOPE_CONTENT_TYPE = "application/vnd.edgebus.envelope"
#: How long an MQTT 5 CONNECT may wait for CONNACK before "auto" retries with 3.1.1.
MQTT5_PROBE_TIMEOUT = 2.0
Protocol = Literal["auto", "5", "3.1.1"]
EndToEndAck = Literal["auto", "required", "off"]
#: The outbox meta key that remembers an end-to-end acknowledgement was ever received.
E2E_SEEN_KEY = "e2e_ack_seen"


@dataclass(frozen=True, slots=True)
class BusConfig:
    """How to reach the broker and who this process is. Unknown keys are errors."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    device: str | None = None
    root: str = "edgebus"
    protocol: Protocol = "auto"
    keepalive: int = 30
    clean_start: bool = False
    session_expiry: int = 86_400
    connect_timeout: float = 5.0
    reconnect_min_delay: float = 0.25
    reconnect_max_delay: float = 30.0
    max_inflight: int = 64
    outbox_path: Path | None = None
    outbox_max_messages: int = 100_000
    outbox_max_bytes: int = 64 * 1024 * 1024
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    end_to_end_ack: EndToEndAck = "auto"
    ack_timeout: float = 30.0
    subscribe_retry_min_delay: float = 1.0
    subscribe_retry_max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("broker host must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"broker port must be 1-65535, not {self.port}")
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ConfigError(f"protocol must be 'auto', '5' or '3.1.1', not {self.protocol!r}")
        if self.device is not None:
            try:
                validate_device_id(self.device)
            except TopicError as exc:
                raise ConfigError(f"device: {exc}") from exc
        if not self.clean_start and not self.resolved_client_id():
            raise ConfigError("a persistent session (clean_start = false) needs client_id or device")
        if self.keepalive < 5:
            raise ConfigError(f"keepalive must be at least 5 seconds, not {self.keepalive}")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ConfigError("reconnect delays must satisfy 0 < min <= max")
        if not 0 < self.subscribe_retry_min_delay <= self.subscribe_retry_max_delay < float("inf"):
            raise ConfigError("subscribe_retry_min_delay and subscribe_retry_max_delay must satisfy "
                              "0 < min <= max (seconds)")
        if self.max_inflight < 1:
            raise ConfigError("max_inflight must be at least 1")
        if self.end_to_end_ack not in ("auto", "required", "off"):
            raise ConfigError(f"end_to_end_ack must be 'auto', 'required' or 'off', not "
                              f"{self.end_to_end_ack!r}")
        if not self.ack_timeout > 0:
            raise ConfigError(f"ack_timeout must be a positive number of seconds, not {self.ack_timeout!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("broker: tls_cert and tls_key go together")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ConfigError("broker: tls_cert needs tls_ca (the CA that signed the broker's "
                              "certificate)")

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with (None: plain TCP); ConfigError names a missing file
        or a client certificate outside its validity period."""
        if self.tls_ca is None:
            return None
        return client_tls_context(self.tls_ca, self.tls_cert, self.tls_key)

    def resolved_client_id(self) -> str:
        """The client id to connect with: explicit, else derived from the device."""
        if self.client_id:
            return self.client_id
        return f"edgebus-{self.device}" if self.device else ""

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, section: str = "broker") -> BusConfig:
        """Build from a parsed config section, naming any unknown key."""
        check_section_keys(section, data, {f.name for f in fields(cls)})
        values = dict(data)
        for key in ("outbox_path", "tls_ca", "tls_cert", "tls_key"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{section}: {exc}") from exc


@dataclass(slots=True)
class SessionStats:
    """Counters a status line or a metrics collector reads (a snapshot)."""

    connected: bool = False
    protocol: str = ""
    connects: int = 0
    connection_losses: int = 0
    accepted: int = 0
    refused: int = 0
    sent: int = 0
    acknowledged: int = 0
    rejected_by_broker: int = 0
    received: int = 0
    outbox_depth: int = 0
    outbox_bytes: int = 0
    #: Rows the coordinator's end-to-end acknowledgement released.
    confirmed: int = 0
    #: Rows sent again because no acknowledgement covered them in time.
    resent: int = 0
    #: Acknowledgements received, and refused as malformed.
    stored_acks: int = 0
    bad_stored_acks: int = 0
    #: Rows carrying samples not yet confirmed by the coordinator (delivered or not).
    awaiting_confirmation: int = 0
    #: Delivered but unconfirmed rows given up to make room (possibly lost; counted).
    evicted: int = 0
    #: Send-to-acknowledgement time of outbox messages, smoothed (EWMA, 1/16), in ms.
    ack_latency_ms: float = 0.0
    last_error: str = ""
    #: Filters the broker refused on the live connection, asked for again with back-off.
    refused_subscriptions: tuple[str, ...] = ()


@dataclass(slots=True)
class _Connection:
    """One live paho client; replaced, never reused, after it drops."""

    client: FewerSyscallsClient
    generation: int
    mqtt5: bool
    connack: threading.Event = field(default_factory=threading.Event)
    refused: str = ""
    refused_protocol: bool = False
    lost: bool = False


class BusSession:
    """A durable, self-reconnecting MQTT session (see the module docstring).

    >>> # with BusSession(BusConfig(port=1883, device="cam-1")) as bus:
    >>> #     bus.publish("edgebus/cam-1/state/mode", b"day", retain=True)
    """

    def __init__(
        self,
        config: BusConfig,
        *,
        birth: Callable[[], bytes] | None = None,
        outbox: Outbox | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._tls = config.tls_context()
        self.topics = TopicTree(config.root)
        self.router = SubscriptionRouter()
        self.outbox = outbox if outbox is not None else Outbox(
            config.outbox_path,
            max_messages=config.outbox_max_messages,
            max_bytes=config.outbox_max_bytes,
        )
        self._birth = birth
        self._rng = rng or random.Random()
        self._stats = SessionStats()
        self._stats_lock = threading.Lock()
        self._conn: _Connection | None = None
        self._generation = 0
        self._mqtt5_refused = config.protocol == "3.1.1"
        self._pump_lock = threading.RLock()
        self._inflight: dict[int, OutboxRow] = {}
        self._sent_at: dict[int, float] = {}
        self._last_sent_id = 0
        self._acks: deque[tuple[int, int, bool]] = deque()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._connect_listeners: list[Callable[[BusSession], None]] = []
        # Routes and the connection they are subscribed on change together under
        # this lock: a route is either in the snapshot a new connection subscribes,
        # or added after it and subscribed by subscribe() itself; never neither.
        self._subscribe_lock = threading.Lock()
        self._subscribed_conn: _Connection | None = None
        self._pending_subacks: dict[int, list[Route]] = {}
        self._subacks: deque[tuple[int, int, list[Any]]] = deque()
        self._refused_subs = RefusedSubscriptions(min_delay=config.subscribe_retry_min_delay,
                                                  max_delay=config.subscribe_retry_max_delay)
        self._thread: threading.Thread | None = None
        self._hooks_checked = False
        #: Delivered rows waiting for the coordinator: row id -> when the PUBACK came (monotonic).
        self._delivered_at: dict[int, float] = {}
        #: How often each unconfirmed row went again without an acknowledgement prompting it.
        self._timed_resends: dict[int, int] = {}
        self._resend: deque[int] = deque()
        self._next_overdue_check = 0.0
        self._e2e = config.end_to_end_ack == "required" or (
            config.end_to_end_ack == "auto" and bool(self.outbox.meta(E2E_SEEN_KEY)))
        if config.device is not None and config.end_to_end_ack != "off":
            self.subscribe(self.topics.stored_ack(config.device), self._on_stored_ack, qos=1)

    # -- lifecycle -----------------------------------------------------

    def start(self) -> BusSession:
        """Start connecting in the background; returns at once (see :meth:`wait_connected`)."""
        if self._thread is not None:
            raise BusError("session already started")
        self._thread = threading.Thread(
            target=self._supervise, name=f"edgebus-session-{self.config.resolved_client_id()}",
            daemon=True,
        )
        self._thread.start()
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected (True) or ``timeout`` passed (False)."""
        return self._connected.wait(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every accepted message was acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._drained:
            while len(self.outbox) > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._drained.wait(0.1 if remaining is None else min(0.1, remaining))
        return True

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Send what can be sent within ``flush_timeout``, say ``offline``, disconnect.

        Whatever is still queued stays in a durable outbox for the next start.
        """
        if self._thread is None:
            return
        if self._connected.is_set() and flush_timeout > 0 and not self.flush(flush_timeout):
            logger.warning("stopping with %d messages still queued", len(self.outbox))
        self._stopping.set()
        self._thread.join(timeout=self.config.connect_timeout + 5)
        self._thread = None
        self.outbox.close()

    def __enter__(self) -> BusSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> SessionStats:
        """A consistent snapshot of the counters."""
        with self._stats_lock:
            snap = SessionStats(**{f.name: getattr(self._stats, f.name) for f in fields(SessionStats)})
        snap.refused = self.outbox.dropped
        snap.outbox_depth = len(self.outbox)
        snap.outbox_bytes = self.outbox.size_bytes
        snap.awaiting_confirmation = self.outbox.awaiting()
        snap.evicted = self.outbox.evicted
        return snap

    @property
    def waits_for_coordinator(self) -> bool:
        """Whether sequenced rows stay until the coordinator confirms them (see ``end_to_end_ack``)."""
        return self._e2e

    def set_birth(self, birth: Callable[[], bytes]) -> None:
        """Set what is published (retained) on the birth topic at every connection."""
        self._birth = birth

    def on_connect(self, listener: Callable[[BusSession], None]) -> None:
        """Call ``listener(session)`` after every (re)connection, on the network thread."""
        self._connect_listeners.append(listener)

    # -- publishing ----------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
    ) -> bool:
        """Accept a message for delivery; False (and counted) when the outbox is full."""
        validate_publish_topic(topic)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        row_id = self.outbox.put(OutboxMessage(topic, data, qos, retain, content_type))
        if row_id is None:
            return False
        self._count("accepted")
        self._pump()
        return True

    @contextmanager
    def transaction(self) -> Iterator[OutboxTransaction]:
        """Reserve sequence numbers and queue messages in one durable commit, then send."""
        with self.outbox.transaction() as tx:
            yield tx
        self._count("accepted", len(tx.accepted))
        self._pump()

    # -- subscribing ---------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> Route:
        """Route matching messages to ``handler``; resubscribed on every reconnect.

        The returned route's :meth:`~broker.router.Route.wait_subscribed` waits
        for the broker's SUBACK on the live connection.
        """
        with self._subscribe_lock:
            route = self.router.add(topic_filter, handler, qos)
            if self._subscribed_conn is not None:
                self._send_subscribe(self._subscribed_conn, topic_filter)
        return route

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the broker acknowledged every route on the live connection.

        False when ``timeout`` passed first; raises
        :class:`~schemas.errors.SubscriptionRefused` when it refused one.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for route in self.router.routes():
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not route.wait_subscribed(remaining):
                return False
        return True

    def unsubscribe(self, route: Route) -> None:
        with self._subscribe_lock:
            if self.router.remove(route):
                self._refused_subs.forget(route.topic_filter)
                self._note_refused_subscriptions()
                if self._subscribed_conn is not None:
                    self._subscribed_conn.client.unsubscribe(route.topic_filter)
            route.suback.mark_pending()

    def _send_subscribe(self, conn: _Connection, topic_filter: str) -> None:
        """SUBSCRIBE ``topic_filter`` at the highest QoS its routes ask for (lock held)."""
        routes = self.router.routes_for(topic_filter)
        if not routes:
            return
        rc, mid = conn.client.subscribe(topic_filter, max(r.qos for r in routes))
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subacks[mid] = routes
        # else the connection is going down: the next one subscribes every route

    def _process_subacks(self, conn: _Connection) -> None:
        """Mark the routes a SUBACK answered, and schedule a refused filter's next try.

        Runs on the network thread, between loops.
        """
        if not self._subacks:
            return
        acks_missed = False
        with self._subscribe_lock:
            live = {id(r) for r in self.router.routes()}  # not those unsubscribed meanwhile
            while self._subacks:
                gen, mid, reason_codes = self._subacks.popleft()
                routes = self._pending_subacks.pop(mid, None) if gen == conn.generation else None
                if not routes:
                    continue
                topic_filter = routes[0].topic_filter
                refusal = next((rc for rc in reason_codes if rc.is_failure), None)
                current = [r for r in routes if id(r) in live]
                for route in current:
                    if refusal is None:
                        route.suback.mark_acknowledged()
                    else:
                        route.suback.mark_refused(str(refusal))
                if refusal is None:
                    before = self._refused_subs.granted(topic_filter)
                    if before:
                        logger.info("broker granted the subscription to %s after %d refusals",
                                    topic_filter, before)
                        acks_missed = acks_missed or (self.config.device is not None and topic_filter
                                                      == self.topics.stored_ack(self.config.device))
                elif current:
                    retry = self._refused_subs.refused(topic_filter, now=time.monotonic(),
                                                       draw=self._rng.random())
                    logger.error("broker refused the subscription to %s: %s (refusal %d in a row; "
                                 "asking again in %.3g s)", topic_filter, refusal, retry.refusals,
                                 retry.delay)
                else:
                    logger.error("broker refused the subscription to %s: %s", topic_filter, refusal)
            self._note_refused_subscriptions()
        if acks_missed:
            self._resend_all_unconfirmed()

    def _resend_all_unconfirmed(self) -> None:
        """Send every delivered, unconfirmed row again, as after a reconnect.

        The stored acknowledgements published while their subscription was refused
        never came, and the retained one a late grant brings may be stale, so what
        they would have released is sent again for the coordinator to confirm.
        """
        with self._pump_lock:
            rows = list(self._delivered_at)
            self._delivered_at.clear()
            for row_id in rows:
                self._timed_resends.pop(row_id, None)
            self._resend.extend(rows)
        if rows:
            logger.info("%d delivered messages unconfirmed while the stored acknowledgements were "
                        "refused; sending them again", len(rows))
            self._pump()

    def _retry_refused_subscriptions(self, conn: _Connection) -> None:
        """SUBSCRIBE again each refused filter whose back-off is over (network thread)."""
        if not self._refused_subs:
            return
        with self._subscribe_lock:
            if self._subscribed_conn is not conn:
                return
            for topic_filter in self._refused_subs.due(time.monotonic()):
                logger.debug("asking the broker again for the subscription to %s", topic_filter)
                self._send_subscribe(conn, topic_filter)

    def _note_refused_subscriptions(self) -> None:
        """Copy the refused filters into the stats (subscribe lock held)."""
        filters = self._refused_subs.filters()
        with self._stats_lock:
            self._stats.refused_subscriptions = filters

    # -- the supervisor thread -----------------------------------------

    def _supervise(self) -> None:
        delay = self.config.reconnect_min_delay
        while not self._stopping.is_set():
            conn = self._connect_once()
            if conn is None:
                wait = delay * (0.5 + self._rng.random())
                logger.debug("reconnecting in %.2f s", wait)
                self._stopping.wait(wait)
                delay = min(delay * 2, self.config.reconnect_max_delay)
                continue
            delay = self.config.reconnect_min_delay
            self._serve(conn)
            if not self._stopping.is_set():
                self._stopping.wait(self.config.reconnect_min_delay * self._rng.random())

    def _new_client(self, mqtt5: bool) -> _Connection:
        cfg = self.config
        self._generation += 1
        gen = self._generation
        protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {}
        if not mqtt5:
            kwargs["clean_session"] = cfg.clean_start
        client = FewerSyscallsClient(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.resolved_client_id(),
            protocol=protocol,
            reconnect_on_failure=False,
            **kwargs,
        )
        client.enable_logger(logging.getLogger("broker.paho"))
        # The outbox bounds what is in flight; paho's own queue must never refuse.
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)
        client.connect_timeout = cfg.connect_timeout
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if cfg.device is not None:
            client.will_set(self.topics.status(cfg.device), b"offline", qos=1, retain=True)
        conn = _Connection(client, gen, mqtt5)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connack(conn, rc)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(conn, rc)
        client.on_publish = lambda c, u, mid, rc, props: self._acks.append(
            (gen, mid, rc.is_failure)
        )
        client.on_message = lambda c, u, msg: self._on_message(conn, msg)
        client.on_subscribe = lambda c, u, mid, reason_codes, props: self._subacks.append(
            (gen, mid, reason_codes)
        )
        return conn

    def _connect_once(self) -> _Connection | None:
        """Open one connection and wait for CONNACK; None when it failed."""
        cfg = self.config
        mqtt5 = not self._mqtt5_refused
        conn = self._new_client(mqtt5)
        try:
            if mqtt5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0 if cfg.clean_start else cfg.session_expiry
                conn.client.connect(cfg.host, cfg.port, cfg.keepalive,
                                    clean_start=cfg.clean_start, properties=props)
            else:
                conn.client.connect(cfg.host, cfg.port, cfg.keepalive)
        except (OSError, ValueError) as exc:
            self._note_error(f"cannot reach broker {cfg.host}:{cfg.port}: {exc}")
            return None
        # A 3.1.1-only broker (amqtt) may never answer an MQTT 5 CONNECT, so the
        # probe gets a short deadline of its own before falling back.
        probing = mqtt5 and cfg.protocol == "auto"
        wait = min(cfg.connect_timeout, MQTT5_PROBE_TIMEOUT) if probing else cfg.connect_timeout
        deadline = time.monotonic() + wait
        rc = mqtt.MQTT_ERR_SUCCESS
        while not conn.connack.is_set() and time.monotonic() < deadline:
            rc = conn.client.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break
        if conn.connack.is_set() and not conn.refused:
            _disable_nagle(conn.client)
            if not self._hooks_checked:
                self._hooks_checked = True
                _warn_unengaged_hooks(conn.client)
            return conn
        self._close(conn)
        no_answer = not conn.connack.is_set()
        if mqtt5 and cfg.protocol == "auto" and (conn.refused_protocol or no_answer):
            # A 3.1.1-only broker answers an MQTT 5 CONNECT with a refusal or a closed socket.
            logger.info("broker %s:%d refused MQTT 5 (%s); using 3.1.1",
                        cfg.host, cfg.port, conn.refused or "connection closed")
            self._mqtt5_refused = True
            return self._connect_once() if not self._stopping.is_set() else None
        self._note_error(conn.refused or f"no CONNACK from {cfg.host}:{cfg.port} (rc={rc})")
        return None

    def _on_connack(self, conn: _Connection, rc: Any) -> None:
        if rc.is_failure:
            conn.refused = f"broker refused the connection: {rc}"
            # 3.1.1 code 1 and MQTT 5 code 132 both mean "unsupported protocol version".
            conn.refused_protocol = rc.value in (1, 132)
        conn.connack.set()

    def _on_disconnect(self, conn: _Connection, rc: Any) -> None:
        conn.lost = True

    def _serve(self, conn: _Connection) -> None:
        """Run one connection until it drops or the session stops."""
        client = conn.client
        cfg = self.config
        with self._stats_lock:
            self._stats.connects += 1
            self._stats.connected = True
            self._stats.protocol = "5" if conn.mqtt5 else "3.1.1"
        logger.info("connected to %s:%d as %s (MQTT %s)", cfg.host, cfg.port,
                    cfg.resolved_client_id() or "(anonymous id)", "5" if conn.mqtt5 else "3.1.1")
        with self._subscribe_lock:
            self._subscribed_conn = conn
            self._pending_subacks.clear()
            self._refused_subs.clear()
            self._note_refused_subscriptions()
            for topic_filter, _ in self.router.subscriptions():
                self._send_subscribe(conn, topic_filter)
        if cfg.device is not None:
            client.publish(self.topics.status(cfg.device), b"online", qos=1, retain=True)
            if self._birth is not None:
                client.publish(self.topics.birth(cfg.device), self._birth(), qos=1, retain=True,
                               properties=self._properties(conn, ENVELOPE_CONTENT_TYPE))
        with self._pump_lock:
            self._conn = conn
            self._inflight.clear()
            self._sent_at.clear()
            self._last_sent_id = 0  # everything still queued, unconfirmed rows too, goes again
            self._delivered_at.clear()
            self._resend.clear()
            self._connected.set()
        for listener in list(self._connect_listeners):
            try:
                listener(self)
            except Exception:
                logger.exception("on_connect listener failed")
        self._pump()
        while not self._stopping.is_set():
            rc = client.loop(timeout=0.2)
            self._process_subacks(conn)
            self._retry_refused_subscriptions(conn)
            self._process_acks(conn)
            if self._delivered_at and time.monotonic() >= self._next_overdue_check:
                self._next_overdue_check = time.monotonic() + 1.0
                self._resend_unconfirmed(prompted=False)
            if rc != mqtt.MQTT_ERR_SUCCESS or conn.lost:
                break
        graceful = self._stopping.is_set() and not conn.lost
        with self._subscribe_lock:
            self._subscribed_conn = None
            self._pending_subacks.clear()
            self._refused_subs.clear()  # the next connection subscribes every route afresh
            self._note_refused_subscriptions()
            for route in self.router.routes():
                route.suback.mark_pending()
        with self._pump_lock:
            self._connected.clear()
            self._conn = None
            self._inflight.clear()
            self._sent_at.clear()
        with self._stats_lock:
            self._stats.connected = False
            if not graceful:
                self._stats.connection_losses += 1
        if graceful:
            self._say_goodbye(conn)
            return
        self._note_error(f"connection to {cfg.host}:{cfg.port} lost")
        logger.warning("connection to %s:%d lost; %d messages queued",
                       cfg.host, cfg.port, len(self.outbox))
        self._close(conn)

    def _say_goodbye(self, conn: _Connection) -> None:
        """Clean disconnects suppress the will, so say ``offline`` ourselves first."""
        client = conn.client
        if self.config.device is not None:
            info = client.publish(self.topics.status(self.config.device), b"offline",
                                  qos=1, retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline:
                if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        client.disconnect()  # sends DISCONNECT and closes the socket; no loop needed after

    @staticmethod
    def _close(conn: _Connection) -> None:
        try:
            conn.client.disconnect()
        except Exception:  # paho raises assorted errors on a dead socket
            logger.debug("closing a dead connection raised", exc_info=True)

    # -- outbox pump ---------------------------------------------------

    def _pump(self) -> None:
        """Hand queued rows to the live connection, oldest first, within the window."""
        with self._pump_lock:
            conn = self._conn
            if conn is None:
                return
            window = self.config.max_inflight - len(self._inflight)
            while window > 0 and self._resend:
                ids = [self._resend.popleft() for _ in range(min(window, len(self._resend)))]
                rows = self.outbox.rows(ids)
                for gone in set(ids) - {row.id for row in rows}:  # released or given up meanwhile
                    self._timed_resends.pop(gone, None)
                for row in rows:
                    if not self._send_row(conn, row):
                        return
                    window -= 1
                self._count("resent", len(rows))
            while window > 0:
                rows = self.outbox.peek(after_id=self._last_sent_id, limit=window)
                if not rows:
                    return
                for row in rows:
                    if not self._send_row(conn, row):
                        return  # connection going down; the row is re-sent next time
                    self._last_sent_id = row.id
                    window -= 1
                with self._stats_lock:
                    self._stats.sent += len(rows)

    def _send_row(self, conn: _Connection, row: OutboxRow) -> bool:
        """Publish one outbox row (pump lock held); False when the connection is going down."""
        m = row.message
        info = conn.client.publish(m.topic, m.payload, m.qos, m.retain,
                                   properties=self._properties(conn, m.content_type))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self._inflight[info.mid] = row
        self._sent_at[info.mid] = time.monotonic()
        return True

    def _process_acks(self, conn: _Connection) -> None:
        if not self._acks:
            return
        done: list[int] = []
        delivered: list[int] = []
        rejected = 0
        latencies: list[float] = []
        now = time.monotonic()
        with self._pump_lock:
            while self._acks:
                gen, mid, failed = self._acks.popleft()
                if gen != conn.generation:
                    continue
                row = self._inflight.pop(mid, None)
                if row is None:
                    continue  # online/birth/goodbye publishes are not outbox rows
                sent_at = self._sent_at.pop(mid, None)
                if sent_at is not None:
                    latencies.append(now - sent_at)
                if failed:
                    rejected += 1
                    logger.error("broker rejected a message for %s (not authorised?); dropped",
                                 row.message.topic)
                elif self._e2e and row.message.span is not None:
                    delivered.append(row.id)  # stays until the coordinator confirms it
                    self._delivered_at[row.id] = now
                    continue
                done.append(row.id)
            self.outbox.ack(done)
            self.outbox.mark_delivered(delivered)
        with self._stats_lock:
            self._stats.acknowledged += len(done) + len(delivered) - rejected
            self._stats.rejected_by_broker += rejected
            for latency in latencies:
                self._stats.ack_latency_ms += (latency * 1000 - self._stats.ack_latency_ms) / 16
        if done:
            with self._drained:
                self._drained.notify_all()
        self._pump()

    @staticmethod
    def _properties(conn: _Connection, content_type: str | None) -> Properties | None:
        if not conn.mqtt5 or content_type is None:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = content_type
        return props

    def _on_stored_ack(self, message: ReceivedMessage) -> None:
        """The coordinator's acknowledgement (network thread): release, and re-send what it skipped."""
        try:
            ack = StoredAck.decode(message.payload)
        except CodecError as exc:
            self._count("bad_stored_acks")
            logger.warning("ignoring a malformed stored acknowledgement on %s: %s", message.topic, exc)
            return
        self._count("stored_acks")
        if not self._e2e:
            logger.info("the coordinator confirms stored samples: keeping them in the outbox until it does")
            self._e2e = True
            self.outbox.set_meta(E2E_SEEN_KEY, 1)
        released = self.outbox.release(ack)
        with self._pump_lock:
            for row_id in released:
                self._delivered_at.pop(row_id, None)
                self._timed_resends.pop(row_id, None)
        if released:
            self._count("confirmed", len(released))
            with self._drained:
                self._drained.notify_all()
        self._resend_unconfirmed(prompted=True)

    def _resend_unconfirmed(self, *, prompted: bool) -> None:
        """Send again the delivered rows no acknowledgement covered in time.

        ``prompted``: an acknowledgement just arrived, so the coordinator is alive
        and skipped them: every row delivered ``ack_timeout`` ago goes. Otherwise
        (a periodic check: the coordinator may be away, or has nothing new to
        acknowledge) a row waits twice as long after each such try, up to 64
        times ``ack_timeout``, so a long outage costs few repeats.
        """
        now = time.monotonic()
        timeout = self.config.ack_timeout
        with self._pump_lock:
            waits = self._timed_resends
            stale = [row_id for row_id, at in self._delivered_at.items()
                     if now - at >= timeout * (1 if prompted else 2 ** min(waits.get(row_id, 0), 6))]
            for row_id in stale:
                del self._delivered_at[row_id]
                if not prompted:
                    self._timed_resends[row_id] = self._timed_resends.get(row_id, 0) + 1
            self._resend.extend(stale)
        if stale:
            logger.info("%d delivered messages unconfirmed after %.0f s or more; sending them again",
                        len(stale), timeout)
            self._pump()

    # -- receiving -----------------------------------------------------

    def _on_message(self, conn: _Connection, msg: mqtt.MQTTMessage) -> None:
        content_type = None
        user_props: tuple[tuple[str, str], ...] = ()
        props = getattr(msg, "properties", None)
        if conn.mqtt5 and props is not None:
            content_type = getattr(props, "ContentType", None)
            user_props = tuple(getattr(props, "UserProperty", ()) or ())
        received = ReceivedMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                   content_type, user_props)
        self._stats.received += 1  # only this (the network) thread writes it: no lock needed
        self.router.dispatch(received)

    # -- helpers -------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)

    def _note_error(self, text: str) -> None:
        logger.debug("%s", text)
        with self._stats_lock:
            self._stats.last_error = text


def _warn_unengaged_hooks(client: FewerSyscallsClient) -> None:
    """Say so when this paho no longer has what broker/paho_client.py hooks into."""
    missing = client.unengaged_hooks()
    if missing:
        logger.warning(
            "paho-mqtt %s: the hooks on its private %s did not engage (not the version pinned "
            "in pyproject.toml?); running on plain paho, which works but costs more system "
            "calls per message", paho.mqtt.__version__, " and ".join(missing))


def _disable_nagle(client: mqtt.Client) -> None:
    """TCP_NODELAY: edgebus traffic is small messages (acks, commands, Raft), not bulk.

    With Nagle on, a publish waiting for the peer's delayed ACK costs ~40 ms a hop
    (a local request/reply round trip measured 44 ms with it, 0.5 ms without).
    """
    sock = client.socket()
    sock = sock.raw if isinstance(sock, BufferedSocket) else sock
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            logger.debug("could not set TCP_NODELAY: %s", exc)
