"""Keeps Home Assistant's picture of one device current over its bus session.

Discovery documents (:mod:`schemas.ha_discovery`) are published retained on
every (re)connection and again whenever Home Assistant announces itself with
``online`` on ``{prefix}/status`` (its birth message), as Home Assistant
recommends: a Home Assistant that restarts, or a broker that lost its retained
messages, learns the device again without waiting for the agent to reconnect.
After a birth the last known state topics are re-published too.

What was published is remembered (in memory, and in the ``ledger`` file when
one is given, so across restarts): before each publication, documents the
device no longer needs are cleared (see :func:`schemas.ha_discovery.stale_messages`),
whether an entity vanished or the operator switched between device-based and
per-entity discovery or changed the prefix.

Only a *live* ``online`` triggers a re-publish. A retained ``online`` is what
the broker replays when this session subscribes, which always coincides with
a (re)connection that already published discovery (and amqtt replays it
twice).

Everything here may run on the session's network thread (connect listener,
subscription handler), so it only calls :meth:`BusSession.publish`, which
writes to the durable outbox and never waits for the broker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from broker.router import ReceivedMessage, Route
from broker.session import BusSession
from schemas.errors import ConfigError
from schemas.ha_discovery import (
    DEFAULT_PREFIX,
    METRICS_STATE,
    DeviceDescription,
    DiscoveryMessage,
    DiscoveryMode,
    Inventory,
    camera_state_name,
    camera_state_payload,
    discovery_inventory,
    discovery_messages,
    metrics_state_payload,
    stale_messages,
)

__all__ = ["HomeAssistantPublisher"]

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"


class HomeAssistantPublisher:
    """Publishes a device's discovery documents and its readable state topics.

    ``mode`` is ``"device"`` (one device-based document, Home Assistant since
    late 2024) or ``"entity"`` (one document per entity, any version). Call
    :meth:`start` once; the session may be started before or after.
    """

    def __init__(self, session: BusSession, description: DeviceDescription,
                 mode: DiscoveryMode = "device", discovery_prefix: str = DEFAULT_PREFIX,
                 ledger: Path | None = None) -> None:
        if session.config.device != description.device:
            raise ConfigError(f"Home Assistant discovery describes device {description.device!r} "
                              f"but the session is device {session.config.device!r}")
        if session.topics.root != description.root:
            raise ConfigError(f"Home Assistant discovery uses topic root {description.root!r} but "
                              f"the session uses {session.topics.root!r}")
        discovery_messages(description, mode, discovery_prefix)  # refuses a bad mode or prefix now
        self.session = session
        self.mode: DiscoveryMode = mode
        self.prefix = discovery_prefix
        self.status_topic = f"{discovery_prefix}/status"
        self._description = description
        self._lock = threading.Lock()
        # One publication at a time (main thread, connect listener, Home Assistant's birth):
        # clearing and publishing must not interleave.
        self._publishing = threading.Lock()
        self._metrics: dict[str, float | int] = {}
        self._camera_payloads: dict[str, bytes] = {}
        self._route: Route | None = None
        self._running = False
        self._counts = {"discovery_published": 0, "ha_births": 0, "refused": 0}
        self.ledger = ledger
        self._inventory: dict[str, tuple[tuple[str, str], ...]] = _load_inventory(ledger)

    @property
    def description(self) -> DeviceDescription:
        return self._description

    # -- lifecycle -----------------------------------------------------

    def start(self) -> HomeAssistantPublisher:
        """Publish discovery on every connection and on Home Assistant's birth."""
        if self._running:
            return self
        self._running = True
        self.session.on_connect(self._on_connect)
        self._route = self.session.subscribe(self.status_topic, self._on_ha_status)
        # A session that is already up will not call the listener until it reconnects.
        if self.session.is_connected:
            self.publish_discovery()
        return self

    def stop(self) -> None:
        """Stop reacting to connections and births (the documents stay retained)."""
        self._running = False
        if self._route is not None:
            self.session.unsubscribe(self._route)
            self._route = None

    # -- discovery -----------------------------------------------------

    def publish_discovery(self) -> int:
        """Clear what is stale, then queue every discovery document (retained); how many were accepted."""
        with self._publishing:
            with self._lock:
                stale = stale_messages(self._inventory, self._description, self.mode, self.prefix)
                messages = discovery_messages(self._description, self.mode, self.prefix)
                current = discovery_inventory(self._description, self.mode, self.prefix)
            cleared = self._publish_all(stale, "discovery_published")
            accepted = self._publish_all(messages, "discovery_published")
            with self._lock:
                if cleared < len(stale):  # try again next time: keep what may still be retained
                    current = {**self._inventory, **current}
                changed = current != self._inventory
                self._inventory = current
            if changed:
                _save_inventory(self.ledger, current)
            return cleared + accepted

    def update_description(self, description: DeviceDescription, *, publish: bool = True) -> int:
        """Switch to ``description`` (a camera was assigned, a metric appeared or went away).

        When ``publish``, entities that vanished are removed from Home Assistant
        first, then the new documents are published. Returns how many messages
        were accepted.
        """
        with self._lock:
            if description.device != self._description.device:
                raise ConfigError("update_description cannot change the device id")
            self._description = description
            known = {camera.name for camera in description.cameras}
            for camera in list(self._camera_payloads):
                if camera not in known:
                    del self._camera_payloads[camera]
        return self.publish_discovery() if publish else 0

    # -- state topics --------------------------------------------------

    def publish_metrics_state(self, values: Mapping[str, float | int]) -> bool:
        """Merge ``values`` into the latest metrics and publish ``state/metrics`` (retained).

        Merging keeps a metric that a collector skipped this round (a rate's
        first call, a shed collector) at its last value instead of "unknown".
        Raises :class:`~schemas.errors.CodecError` for a non-numeric value.
        """
        with self._lock:
            merged = {**self._metrics, **values}
            payload = metrics_state_payload(merged)
            self._metrics = merged
        topic = self.session.topics.state(self._description.device, METRICS_STATE)
        return self._publish(topic, payload)

    def publish_camera_state(self, camera: str, counts: Mapping[str, int]) -> bool:
        """Publish ``state/{camera}_objects`` (retained): ``{label: count}``, unseen labels 0."""
        with self._lock:
            labels: tuple[str, ...] = ()
            for described in self._description.cameras:
                if described.name == camera:
                    labels = described.labels
            payload = camera_state_payload(counts, labels)
            self._camera_payloads[camera] = payload
        topic = self.session.topics.state(self._description.device, camera_state_name(camera))
        return self._publish(topic, payload)

    def stats(self) -> dict[str, int]:
        """Counters: documents published, Home Assistant births seen, publishes refused."""
        with self._lock:
            return dict(self._counts)

    # -- callbacks (network thread) ------------------------------------

    def _on_connect(self, session: BusSession) -> None:
        if self._running:
            self.publish_discovery()

    def _on_ha_status(self, message: ReceivedMessage) -> None:
        if not self._running or message.payload.strip() != b"online" or message.retain:
            return
        logger.info("Home Assistant came online; re-publishing discovery for %s",
                    self._description.device)
        with self._lock:
            self._counts["ha_births"] += 1
        self.publish_discovery()
        self._republish_states()

    def _republish_states(self) -> None:
        tree = self.session.topics
        device = self._description.device
        with self._lock:
            states = [(tree.state(device, camera_state_name(camera)), payload)
                      for camera, payload in self._camera_payloads.items()]
            if self._metrics:
                states.append((tree.state(device, METRICS_STATE),
                               metrics_state_payload(self._metrics)))
        for topic, payload in states:
            self._publish(topic, payload)

    # -- helpers -------------------------------------------------------

    def _publish_all(self, messages: list[DiscoveryMessage], counter: str) -> int:
        accepted = 0
        for message in messages:
            if self._publish(message.topic, message.payload()):
                accepted += 1
        with self._lock:
            self._counts[counter] += accepted
        return accepted

    def _publish(self, topic: str, payload: bytes) -> bool:
        ok = self.session.publish(topic, payload, qos=1, retain=True,
                                  content_type=JSON_CONTENT_TYPE)
        if not ok:
            with self._lock:
                self._counts["refused"] += 1
            logger.warning("outbox refused %s; Home Assistant may show stale data", topic)
        return ok


def _load_inventory(ledger: Path | None) -> dict[str, tuple[tuple[str, str], ...]]:
    """What an earlier run published (empty without a ledger, or when it is unreadable)."""
    if ledger is None or not ledger.exists():
        return {}
    try:
        data = json.loads(ledger.read_text())
        return {str(topic): tuple((str(p), str(o)) for p, o in entities)
                for topic, entities in data["topics"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring %s (%s): documents of an earlier run may stay retained", ledger, exc)
        return {}


def _save_inventory(ledger: Path | None, inventory: Inventory) -> None:
    if ledger is None:
        return
    body = {"topics": {topic: [list(e) for e in entities] for topic, entities in inventory.items()}}
    try:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        temporary = ledger.with_name(ledger.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1, sort_keys=True))
        os.replace(temporary, ledger)
    except OSError as exc:
        logger.warning("cannot record the published discovery in %s: %s", ledger, exc)
