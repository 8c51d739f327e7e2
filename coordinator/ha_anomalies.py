"""Home Assistant binary sensors for anomalies: one "Anomaly" problem sensor per device.

For every device it has seen a birth or status from, the coordinator publishes
(retained) a per-entity discovery document on
``{prefix}/binary_sensor/{node}/anomaly/config``; its ``dev.identifiers`` are
the agent's own (``edgebus_{node}``, see :mod:`schemas.ha_discovery`), so Home
Assistant attaches the sensor to the device the agent announced. The agent
owns the device-based document, so the coordinator never writes that one.

State is retained JSON on ``{root}/_anomaly/{device}/state``::

    {"active": true, "metric": "cpu_percent", "explanation": "...", "severity": "critical", "time_ms": ...}

set when an alert fires and cleared (``"active": false``) when the episodes of
every metric that alerted have closed, as far as the ``episode_open`` probe
can tell (the online detectors' episode gates); for alerts whose episode
nobody tracks (the batch detector's) after ``clear_after_s`` without alerts.
A device is published as inactive when first seen, so a state left active by a
coordinator that stopped does not stay on forever.

Configuration (``[home_assistant]``; every key optional)::

    enabled = true
    prefix = "homeassistant"
    clear_after_s = 300
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.session import BusSession
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.options import check_keys, float_option
from schemas.errors import BusError, ConfigError, TopicError
from schemas.ha_discovery import AVAILABLE, DEFAULT_PREFIX, NOT_AVAILABLE, ORIGIN_NAME
from schemas.topics import TopicTree, ha_slug

__all__ = ["AnomalySensors", "HomeAssistantConfig", "STATE_LEVEL"]

logger = logging.getLogger(__name__)

STATE_LEVEL = "state"
OBJECT_ID = "anomaly"
_WHERE = "home_assistant"

#: ``(device, metric) -> whether its anomaly episode is still open``; None when unknown.
EpisodeProbe = Callable[[str, str], bool | None]


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    """``[home_assistant]``, checked."""

    enabled: bool = True
    prefix: str = DEFAULT_PREFIX
    clear_after_s: float = 300.0

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None) -> HomeAssistantConfig:
        table = table or {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"{_WHERE} must be a table ([{_WHERE}])")
        check_keys(_WHERE, table, {"enabled", "prefix", "clear_after_s"})
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{_WHERE}: enabled must be true or false, not {enabled!r}")
        prefix = table.get("prefix", DEFAULT_PREFIX)
        try:
            TopicTree.ha_discovery("binary_sensor", "x", "x", prefix=prefix)
        except (TopicError, TypeError) as exc:
            raise ConfigError(f"{_WHERE}: prefix {prefix!r}: {exc}") from None
        clear = float_option(_WHERE, table, "clear_after_s", 300.0, low=1.0, high=7 * 86400.0)
        return cls(enabled=enabled, prefix=prefix, clear_after_s=clear)


def discovery_config(tree: TopicTree, device: str) -> dict[str, Any]:
    """The binary sensor's discovery document for ``device``."""
    node = ha_slug(device)
    state = tree.anomaly(device, STATE_LEVEL)
    return {
        "name": "Anomaly",
        "unique_id": f"edgebus_{node}_{OBJECT_ID}",
        "object_id": f"{node}_{OBJECT_ID}",
        "device_class": "problem",
        "state_topic": state,
        "value_template": "{{ 'ON' if value_json.active else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": state,
        "availability": [{"topic": tree.status(device), "payload_available": AVAILABLE,
                          "payload_not_available": NOT_AVAILABLE}],
        "qos": 1,
        "dev": {"identifiers": [f"edgebus_{node}"]},
        "o": {"name": ORIGIN_NAME},
    }


class AnomalySensors:
    """Publishes discovery per new device, state per alert, and clears quiet devices (:meth:`tick`)."""

    def __init__(self, session: BusSession, config: HomeAssistantConfig, *,
                 episode_open: EpisodeProbe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.config = config
        self._episode_open = episode_open or (lambda _device, _metric: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._announced: set[str] = set()
        #: device -> (when its last alert fired, the metrics that alerted), only while its sensor is on
        self._active: dict[str, tuple[float, set[str]]] = {}

    def discovery_topic(self, device: str) -> str:
        return TopicTree.ha_discovery("binary_sensor", ha_slug(device), OBJECT_ID, prefix=self.config.prefix)

    def state_topic(self, device: str) -> str:
        return self.session.topics.anomaly(device, STATE_LEVEL)

    def on_device(self, device: str) -> None:
        """A device appeared: announce its sensor (once per run) and publish it as inactive."""
        with self._lock:
            if device in self._announced:
                return
            self._announced.add(device)
        config = discovery_config(self.session.topics, device)
        self._publish(self.discovery_topic(device), config)
        with self._lock:
            active = device in self._active
        if not active:
            self._publish(self.state_topic(device), {"active": False})
        logger.info("Home Assistant anomaly sensor announced for %s", device)

    def on_alert(self, alert: Alert) -> None:
        """An alert fired: turn the device's sensor on (announcing it first if needed)."""
        with self._lock:
            _last, metrics = self._active.get(alert.device, (0.0, set()))
            self._active[alert.device] = (self._clock(), metrics | {alert.metric})
            known = alert.device in self._announced
        if not known:
            self.on_device(alert.device)
        self._publish(self.state_topic(alert.device), {
            "active": True, "metric": alert.metric, "explanation": alert.explanation,
            "severity": alert.severity.value, "kind": alert.kind.value, "time_ms": alert.time_ms})

    def tick(self) -> list[str]:
        """Clear devices whose episodes are over (see the module docstring); the devices cleared."""
        now = self._clock()
        with self._lock:
            active = dict(self._active)
        cleared = []
        for device, (last, metrics) in sorted(active.items()):
            states = {self._episode_open(device, metric) for metric in metrics}
            if True in states:
                continue  # still anomalous
            if None in states and now - last < self.config.clear_after_s:
                continue  # nobody says the episode is over: wait out the quiet period
            with self._lock:
                if self._active.get(device, (None, None))[0] != last:
                    continue  # a new alert arrived meanwhile
                del self._active[device]
            cleared.append(device)
            self._publish(self.state_topic(device), {"active": False})
            logger.info("anomaly sensor of %s cleared (%s)", device,
                        "episode closed" if None not in states else "quiet period over")
        return cleared

    def _publish(self, topic: str, document: Mapping[str, Any]) -> None:
        try:
            self.session.publish(topic, json.dumps(document, separators=(",", ":")), qos=1, retain=True,
                                 content_type="application/json")
        except BusError as exc:
            logger.warning("Home Assistant publish to %s failed: %s", topic, exc)
