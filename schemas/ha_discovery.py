"""Home Assistant MQTT discovery documents for one edgebus device. Pure: builds, never publishes.

Home Assistant learns a device's entities from retained JSON "config"
documents under its discovery prefix (default ``homeassistant``). Two forms
exist and both are built here:

* **device-based** (Home Assistant releases since late 2024): one document on
  ``{prefix}/device/{node}/config`` holding the device block (``dev``), the
  origin block (``o``), the shared availability and one entry per entity in
  ``cmps``, each with its platform (``p``) and ``unique_id``;
* **per-entity** (every version): one document per entity on
  ``{prefix}/{component}/{node}/{object}/config``, each repeating ``dev``,
  ``o`` and the availability.

``node`` is :func:`~schemas.topics.ha_slug` of the device id - the same node
the generated Mosquitto ACL lets that device write under
(``{prefix}/+/{node}/#``).

Entity state comes from retained, readable JSON state topics the agent
publishes (see :func:`metrics_state_payload` and :func:`camera_state_payload`)::

    {root}/{device}/state/metrics           {"cpu_percent": 12.5, "temp_soc_c": 48.3, ...}
    {root}/{device}/state/{camera}_objects  {"person": 2, "car": 0}

Availability follows ``{root}/{device}/status`` (``online``/``offline``, the
session's will). A camera's object-count sensors and its occupancy also need
the camera's stream to be up (``state/{camera}_health`` says ``streaming``;
both availability topics, ``availability_mode: all``), so an outage shows as
"unavailable", never as an empty or an occupied room; its connectivity binary
sensor (``{camera}_stream``) reads that health topic and stays available while
the agent is. Templates read keys as ``value_json['name']`` because metric
names may hold ``-`` and ``.``, which Jinja attribute access cannot; a key
that is missing renders ``None``, which Home Assistant shows as "unknown"
rather than logging a parse error.

>>> desc = DeviceDescription(device="gw-1", model="Raspberry Pi 4", sw_version="0.1.0",
...                          metrics=(describe_metric("cpu_percent"),))
>>> message = device_discovery(desc)
>>> message.topic
'homeassistant/device/gw-1/config'
>>> message.config["cmps"]["cpu_percent"]["unique_id"]
'edgebus_gw-1_cpu_percent'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemas.camera_health import SourceState, camera_health_name
from schemas.errors import CodecError, ConfigError, TopicError
from schemas.topics import DEFAULT_ROOT, TopicTree, ha_slug, validate_device_id, validate_name

__all__ = [
    "AVAILABLE",
    "DEFAULT_PREFIX",
    "METRICS_STATE",
    "NOT_AVAILABLE",
    "ORIGIN_NAME",
    "RECENT_SENSOR_DEVICE_CLASSES",
    "SENSOR_DEVICE_CLASSES",
    "STATE_CLASSES",
    "CameraEntities",
    "DeviceDescription",
    "DiscoveryMessage",
    "DiscoveryMode",
    "Inventory",
    "MetricEntity",
    "camera_state_name",
    "camera_state_payload",
    "describe_metric",
    "device_discovery",
    "discovery_messages",
    "discovery_inventory",
    "entity_discovery",
    "metrics_state_payload",
    "removal_messages",
    "stale_messages",
]

DEFAULT_PREFIX = "homeassistant"
ORIGIN_NAME = "edgebus"
AVAILABLE = "online"
NOT_AVAILABLE = "offline"
METRICS_STATE = "metrics"
DiscoveryMode = Literal["device", "entity"]

#: Home Assistant's sensor device classes. An unknown class makes Home Assistant
#: refuse the whole entity, so a typo in the agent's config is caught here instead.
SENSOR_DEVICE_CLASSES = frozenset({
    "apparent_power", "aqi", "area", "atmospheric_pressure", "battery",
    "blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity",
    "current", "data_rate", "data_size", "date", "distance", "duration", "energy",
    "energy_distance", "energy_storage", "enum", "frequency", "gas", "humidity", "illuminance",
    "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide",
    "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "power", "power_factor",
    "precipitation", "precipitation_intensity", "pressure", "reactive_energy", "reactive_power",
    "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature", "timestamp",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume",
    "volume_flow_rate", "volume_storage", "water", "weight", "wind_direction", "wind_speed",
    # Home Assistant 2026.2 (see RECENT_SENSOR_DEVICE_CLASSES).
    "absolute_humidity", "pm4", "temperature_delta",
})
STATE_CLASSES = frozenset({"measurement", "total", "total_increasing"})
_ICON_RE = re.compile(r"[a-z]+:[a-z0-9-]+")


def _ha_id(value: str, what: str) -> str:
    try:
        return ha_slug(value)
    except TopicError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _text(value: object, what: str, *, max_chars: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars or not value.isprintable():
        raise ConfigError(f"{what} must be 1-{max_chars} printable characters, not {value!r}")
    return value


def _optional_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _name(value: object, what: str) -> str:
    try:
        return validate_name(value, what)  # type: ignore[arg-type]
    except TopicError as exc:
        raise ConfigError(str(exc)) from None


def _label(name: str) -> str:
    """``mem_used_percent`` -> ``Mem used percent``: a readable default entity name."""
    words = re.sub(r"[_.-]+", " ", name).strip()
    return words[:1].upper() + words[1:]


@dataclass(frozen=True, slots=True)
class MetricEntity:
    """One metric shown as a Home Assistant sensor.

    ``name`` is the key in the metrics state JSON (the metric name on the bus);
    ``label`` is what Home Assistant shows (after the device name). Diagnostic
    metrics (the agent's own health) land in the device page's diagnostic
    section instead of dashboards.
    """

    name: str
    label: str | None = None
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None
    diagnostic: bool = False
    precision: int | None = None

    def __post_init__(self) -> None:
        _name(self.name, "metric name")
        _optional_text(self.label, f"metric {self.name!r} label")
        if self.unit is not None:
            _text(self.unit, f"metric {self.name!r} unit", max_chars=32)
        if self.device_class is not None and self.device_class not in SENSOR_DEVICE_CLASSES:
            raise ConfigError(f"metric {self.name!r}: device_class {self.device_class!r} is not a "
                              "Home Assistant sensor device class")
        if self.state_class is not None and self.state_class not in STATE_CLASSES:
            raise ConfigError(f"metric {self.name!r}: state_class must be one of "
                              f"{', '.join(sorted(STATE_CLASSES))} or None, not {self.state_class!r}")
        if self.icon is not None and not _ICON_RE.fullmatch(self.icon):
            raise ConfigError(f"metric {self.name!r}: icon must look like 'mdi:chip', not "
                              f"{self.icon!r}")
        if self.precision is not None and (type(self.precision) is not int
                                           or not 0 <= self.precision <= 10):
            raise ConfigError(f"metric {self.name!r}: precision must be an integer 0-10")


# What Home Assistant should make of the metrics the agent's collectors and cameras publish:
# a full-match pattern on the name (without ``agent_``) and the entity's fields. ``{x}`` in a
# label is the pattern's group ``x`` made readable. The first match wins; explicit
# MetricEntity values override all of this.
def _rule(pattern: str, **fields: Any) -> tuple[re.Pattern[str], dict[str, Any]]:
    return re.compile(pattern), fields


_COUNT = {"state_class": "total_increasing", "precision": 0}
_DURATION_MS = {"unit": "ms", "device_class": "duration", "precision": 1}
_CAMERA = r"camera_(?P<camera>.+)_"
_KNOWN_METRICS: tuple[tuple[re.Pattern[str], dict[str, Any]], ...] = (
    _rule(r"cpu_percent", label="CPU", unit="%", icon="mdi:cpu-64-bit", precision=1),
    _rule(r"cpu(?P<core>\d+)_percent", label="CPU core {core}", unit="%", icon="mdi:cpu-64-bit",
          precision=1),
    _rule(r"load(?P<minutes>1|5|15)", label="Load ({minutes} min)", icon="mdi:gauge", precision=2),
    _rule(r"mem_used_percent", label="Memory used", unit="%", icon="mdi:memory", precision=1),
    _rule(r"mem_available_bytes", label="Memory available", unit="B", device_class="data_size",
          precision=0),
    _rule(r"swap_used_percent", label="Swap used", unit="%", icon="mdi:memory", precision=1),
    _rule(r"disk_used_percent", label="Disk used", unit="%", icon="mdi:harddisk", precision=1),
    _rule(r"disk_(?P<disk>.+)_used_percent", label="Disk {disk} used", unit="%",
          icon="mdi:harddisk", precision=1),
    _rule(r"net_rx_bytes_per_s", label="Network received", unit="B/s", device_class="data_rate",
          precision=0),
    _rule(r"net_tx_bytes_per_s", label="Network sent", unit="B/s", device_class="data_rate",
          precision=0),
    _rule(r"net_errors_total", label="Network errors", unit="errors", **_COUNT),
    _rule(r"battery_percent", label="Battery", unit="%", device_class="battery", precision=0),
    _rule(r"battery_plugged", label="On mains power", icon="mdi:power-plug", precision=0),
    _rule(r"temp_c|temperature", label="Temperature", unit="°C", device_class="temperature",
          precision=1),
    _rule(r"temp_(?P<zone>.+)_c", label="{zone} temperature", unit="°C",
          device_class="temperature", precision=1),
    # The agent's own health (agents/runtime.py, agents/collectors/agent.py).
    _rule(r"rss_bytes", label="memory (RSS)", unit="B", device_class="data_size", precision=0),
    _rule(r"outbox_depth", label="Outbox depth", unit="messages", icon="mdi:tray-full",
          precision=0),
    _rule(r"outbox_bytes", label="Outbox size", unit="B", device_class="data_size", precision=0),
    _rule(r"outbox_unconfirmed", label="Batches awaiting the coordinator", unit="messages",
          icon="mdi:tray-full", precision=0),
    _rule(r"outbox_evicted_total", label="Batches given up unconfirmed", unit="messages", **_COUNT),
    _rule(r"dropped|dropped_total", label="Dropped messages", unit="messages", **_COUNT),
    _rule(r"publish_latency_ms", label="Publish latency", **_DURATION_MS),
    _rule(r"connection_losses_total", label="Connection losses", unit="losses", **_COUNT),
    _rule(r"shed_level", label="Load shedding level", icon="mdi:stairs-down", precision=0),
    _rule(r"shed_level_changes_total", label="Load shedding changes", unit="changes", **_COUNT),
    _rule(r"shed_total", label="Jobs shed", unit="jobs", **_COUNT),
    _rule(r"job_failures_total", label="Job failures", unit="failures", **_COUNT),
    _rule(r"suppressed_total", label="Samples suppressed", unit="samples", **_COUNT),
    # Each camera's pipeline (agents/camera/host.py).
    _rule(_CAMERA + r"frames_detected_total", label="{camera} frames analysed", unit="frames",
          **_COUNT),
    _rule(_CAMERA + r"frames_shed_total", label="{camera} frames shed (overload)", unit="frames",
          **_COUNT),
    _rule(_CAMERA + r"frames_(?P<what>captured|dropped)_total", label="{camera} frames {what}",
          unit="frames", **_COUNT),
    _rule(_CAMERA + r"motion_skipped_total", label="{camera} frames without motion",
          unit="frames", **_COUNT),
    _rule(_CAMERA + r"inference_ms", label="{camera} inference time", **_DURATION_MS),
    _rule(_CAMERA + r"overhead_ms", label="{camera} pipeline overhead", **_DURATION_MS),
    _rule(_CAMERA + r"active_tracks", label="{camera} objects tracked", unit="objects",
          precision=0),
    _rule(_CAMERA + r"detector_errors_total", label="{camera} detector errors", unit="errors",
          **_COUNT),
    _rule(_CAMERA + r"streaming", label="{camera} streaming", icon="mdi:cctv", precision=0),
    _rule(_CAMERA + r"source_reconnects_total", label="{camera} reconnect attempts",
          unit="attempts", **_COUNT),
    _rule(_CAMERA + r"source_outages_total", label="{camera} stream outages", unit="outages",
          **_COUNT),
)
# Any other name: its unit from its suffix.
_SUFFIX_RULES: tuple[tuple[re.Pattern[str], dict[str, Any]], ...] = (
    _rule(r"(?P<what>.+)_bytes_per_s", unit="B/s", device_class="data_rate", precision=0),
    _rule(r"(?P<what>.+)_bytes", unit="B", device_class="data_size", precision=0),
    _rule(r"(?P<what>.+)_percent", unit="%"),
    _rule(r"(?P<what>.+)_ms", unit="ms", device_class="duration"),
    _rule(r"(?P<what>.+)_s", unit="s", device_class="duration"),
    _rule(r"(?P<what>.+)_c", unit="°C", device_class="temperature", precision=1),
    _rule(r"(?P<what>.+_(?P<noun>[a-z]+))_total", **_COUNT),
)
#: Words of metric names and how a person writes them.
_WORDS = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "mem": "memory", "rss": "RSS", "net": "network",
          "rx": "received", "tx": "sent", "temp": "temperature", "soc": "SoC", "io": "I/O",
          "fps": "FPS", "ms": "ms", "mqtt": "MQTT", "ota": "OTA", "nvme": "NVMe", "ssd": "SSD"}
#: Sensor device classes some Home Assistant releases in use do not know (reactive_energy
#: is missing in 2025.4; the other three came in 2026.2): accepted, but the agent's own
#: entities never use them, so its discovery works on every release since device discovery.
RECENT_SENSOR_DEVICE_CLASSES = frozenset({"reactive_energy", "absolute_humidity", "pm4",
                                          "temperature_delta"})


def _readable(name: str) -> str:
    """``disk_data.v2`` -> ``data v2``; ``cpu_thermal`` -> ``CPU thermal``: words as a person writes them."""
    words = [w for w in re.split(r"[_.\s-]+", name) if w]
    return " ".join(_WORDS.get(w.lower(), w) for w in words)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_metric(name: str, **overrides: Any) -> MetricEntity:
    """A :class:`MetricEntity` for ``name``: a readable label, a unit, a device class.

    Knows every metric the agent publishes (the collectors', the agent's own
    health ``agent_*`` and each camera's ``camera_{name}_*``) and reads the unit
    of any other from its suffix (``_percent``, ``_bytes``, ``_ms``, ``_c``,
    ``_total`` ...). The agent's health, the delivery counters and the camera
    pipelines' figures are diagnostic. ``overrides`` are MetricEntity fields and win.

    >>> describe_metric("temp_soc_c").device_class
    'temperature'
    >>> describe_metric("agent_cpu_percent").label
    'Agent CPU'
    >>> m = describe_metric("agent_publish_latency_ms"); (m.label, m.unit)
    ('Agent publish latency', 'ms')
    >>> describe_metric("camera_front_door_frames_dropped_total").label
    'Front door frames dropped'
    """
    base = name.removeprefix("agent_") or name
    values: dict[str, Any] = {}
    for pattern, fields in (*_KNOWN_METRICS, *_SUFFIX_RULES):
        match = pattern.fullmatch(base)
        if match is None:
            continue
        values.update(fields)
        groups = {k: _readable(v) for k, v in match.groupdict().items() if v is not None}
        if "label" in values:
            values["label"] = values["label"].format(**groups)
        else:
            values["label"] = groups["what"] if "what" in groups else _readable(base)
            if "noun" in groups:
                values.setdefault("unit", groups["noun"])
        break
    label = _sentence(values.pop("label", None) or _readable(base))
    if base != name:
        label = "Agent " + (label if label[:2].isupper() else label[:1].lower() + label[1:])
    values["label"] = label
    values["diagnostic"] = (base != name or base in ("outbox_depth", "dropped")
                            or base.startswith("camera_"))
    values.update(overrides)
    return MetricEntity(name=name, **values)


@dataclass(frozen=True, slots=True)
class CameraEntities:
    """One camera: an object-count sensor per label and an occupancy binary sensor.

    Occupancy is on while any of ``occupancy_labels`` is counted (default:
    ``person`` when it is among the labels, else every label).
    """

    name: str
    labels: tuple[str, ...]
    occupancy_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _name(self.name, "camera")
        _name(camera_state_name(self.name), "camera state name")
        labels = tuple(self.labels)
        if not labels:
            raise ConfigError(f"camera {self.name!r} needs at least one label")
        for label in labels:
            _name(label, f"camera {self.name!r} label")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"camera {self.name!r} lists a label twice")
        object.__setattr__(self, "labels", labels)
        occupancy = self.occupancy_labels
        if occupancy is None:
            occupancy = ("person",) if "person" in labels else labels
        occupancy = tuple(occupancy)
        unknown = [label for label in occupancy if label not in labels]
        if not occupancy or unknown:
            raise ConfigError(f"camera {self.name!r}: occupancy labels must be a non-empty subset "
                              f"of its labels (unknown: {unknown})")
        object.__setattr__(self, "occupancy_labels", occupancy)


def camera_state_name(camera: str) -> str:
    """The state name whose topic holds a camera's object counts: ``{camera}_objects``."""
    return f"{camera}_objects"


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    """What Home Assistant should know about one device (operator config plus what it runs).

    ``name`` defaults to the device id; ``manufacturer`` to ``edgebus``.
    ``sw_version`` is the agent's version and also goes into the origin block.
    """

    device: str
    sw_version: str
    model: str = "edgebus agent"
    name: str | None = None
    manufacturer: str = "edgebus"
    metrics: tuple[MetricEntity, ...] = ()
    cameras: tuple[CameraEntities, ...] = ()
    root: str = DEFAULT_ROOT
    hw_version: str | None = None
    suggested_area: str | None = None
    configuration_url: str | None = None
    support_url: str | None = None

    def __post_init__(self) -> None:
        try:
            validate_device_id(self.device)
            TopicTree(self.root)
        except TopicError as exc:
            raise ConfigError(str(exc)) from None
        _text(self.sw_version, "sw_version", max_chars=64)
        _text(self.model, "model")
        _optional_text(self.name, "device name")
        _text(self.manufacturer, "manufacturer")
        _optional_text(self.hw_version, "hw_version")
        _optional_text(self.suggested_area, "suggested_area")
        _optional_text(self.configuration_url, "configuration_url")
        _optional_text(self.support_url, "support_url")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        for metric in self.metrics:
            if not isinstance(metric, MetricEntity):
                raise ConfigError(f"metrics must hold MetricEntity values, not {metric!r}")
        for camera in self.cameras:
            if not isinstance(camera, CameraEntities):
                raise ConfigError(f"cameras must hold CameraEntities values, not {camera!r}")
        # Building the entities checks that no two of them share an object id.
        _entities(self)

    @property
    def node(self) -> str:
        """The Home Assistant node / device object id: the device id made ``[A-Za-z0-9_-]+``."""
        return _ha_id(self.device, "device id")

    @property
    def identifier(self) -> str:
        """The device registry identifier: ``edgebus_{node}``."""
        return f"edgebus_{self.node}"

    def topics(self) -> TopicTree:
        return TopicTree(self.root)


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained discovery publish; ``config`` None means "remove" (an empty payload)."""

    topic: str
    config: Mapping[str, Any] | None

    def payload(self) -> bytes:
        """Compact UTF-8 JSON (``°C`` stays readable), or ``b""`` to remove."""
        if self.config is None:
            return b""
        return json.dumps(self.config, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Entity:
    object_id: str
    platform: str
    options: dict[str, Any]


# Keys are metric names or labels, so never hold quotes or backslashes (validate_name).
def _sensor_template(key: str) -> str:
    return "{{ value_json['" + key + "'] | default(None) }}"


#: Availability of a camera's object entities from its health topic (schemas/camera_health.py).
_STREAMING_TEMPLATE = ("{{ '" + AVAILABLE + "' if value_json.state == '" + SourceState.STREAMING.value
                       + "' else '" + NOT_AVAILABLE + "' }}")


def _count_expression(key: str) -> str:
    return "(value_json['" + key + "'] | default(0) | int(0))"


def _entities(desc: DeviceDescription) -> list[_Entity]:
    """Every entity of ``desc`` with its object id and platform options (no dev/o/availability)."""
    tree = desc.topics()
    node = desc.node
    out: list[_Entity] = []
    metrics_topic = tree.state(desc.device, METRICS_STATE)
    for metric in desc.metrics:
        object_id = _ha_id(metric.name, f"metric {metric.name!r}")
        options: dict[str, Any] = {
            "name": metric.label or _label(metric.name),
            "state_topic": metrics_topic,
            "value_template": _sensor_template(metric.name),
        }
        for key, value in (("unit_of_measurement", metric.unit),
                           ("device_class", metric.device_class),
                           ("state_class", metric.state_class), ("icon", metric.icon),
                           ("suggested_display_precision", metric.precision)):
            if value is not None:
                options[key] = value
        if metric.diagnostic:
            options["entity_category"] = "diagnostic"
        out.append(_Entity(object_id, "sensor", options))
    for camera in desc.cameras:
        topic = tree.state(desc.device, camera_state_name(camera.name))
        health_topic = tree.state(desc.device, camera_health_name(camera.name))
        cam = _ha_id(camera.name, f"camera {camera.name!r}")
        while_streaming = {"availability": [*_availability(desc), {
            "topic": health_topic, "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE, "value_template": _STREAMING_TEMPLATE}],
            "availability_mode": "all"}
        for label in camera.labels:
            out.append(_Entity(f"{cam}_{_ha_id(label, 'label')}_count", "sensor", {
                "name": f"{_label(camera.name)} {_label(label).lower()} count",
                "state_topic": topic,
                "value_template": "{{ " + _count_expression(label) + " }}",
                "state_class": "measurement",
                "unit_of_measurement": "objects" if label != "person" else "people",
                "icon": "mdi:account-multiple" if label == "person" else "mdi:shape",
                **while_streaming,
            }))
        occupied = " + ".join(_count_expression(label) for label in camera.occupancy_labels or ())
        out.append(_Entity(f"{cam}_occupancy", "binary_sensor", {
            "name": f"{_label(camera.name)} occupancy",
            "state_topic": topic,
            "device_class": "occupancy",
            "value_template": "{{ 'ON' if (" + occupied + ") > 0 else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            **while_streaming,
        }))
        out.append(_Entity(f"{cam}_stream", "binary_sensor", {
            "name": f"{_label(camera.name)} stream",
            "state_topic": health_topic,
            "json_attributes_topic": health_topic,
            "device_class": "connectivity",
            "value_template": "{{ 'ON' if value_json.state == '" + SourceState.STREAMING.value
                              + "' else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
        }))
    seen: dict[str, str] = {}
    for entity in out:
        if entity.object_id in seen:
            raise ConfigError(f"device {desc.device!r}: two entities map to the Home Assistant id "
                              f"{entity.object_id!r} ({seen[entity.object_id]!r} and "
                              f"{entity.options['name']!r}); rename a metric or camera")
        seen[entity.object_id] = str(entity.options["name"])
        entity.options["unique_id"] = f"edgebus_{node}_{entity.object_id}"
    return out


def _device_block(desc: DeviceDescription) -> dict[str, Any]:
    block: dict[str, Any] = {
        "identifiers": [desc.identifier],
        "name": desc.name or desc.device,
        "manufacturer": desc.manufacturer,
        "model": desc.model,
        "sw_version": desc.sw_version,
    }
    for key, value in (("hw_version", desc.hw_version), ("suggested_area", desc.suggested_area),
                       ("configuration_url", desc.configuration_url)):
        if value is not None:
            block[key] = value
    return block


def _origin_block(desc: DeviceDescription) -> dict[str, Any]:
    block: dict[str, Any] = {"name": ORIGIN_NAME, "sw_version": desc.sw_version}
    if desc.support_url is not None:
        block["support_url"] = desc.support_url
    return block


def _availability(desc: DeviceDescription) -> list[dict[str, str]]:
    return [{"topic": desc.topics().status(desc.device), "payload_available": AVAILABLE,
             "payload_not_available": NOT_AVAILABLE}]


def _check_prefix(prefix: str) -> str:
    try:
        TopicTree.ha_discovery("device", "x", "x", prefix=prefix)
    except TopicError as exc:
        raise ConfigError(f"discovery prefix: {exc}") from None
    return prefix


def _device_topic(desc: DeviceDescription, prefix: str) -> str:
    # The device form has no node level: {prefix}/device/{object_id}/config.
    return f"{_check_prefix(prefix)}/device/{desc.node}/config"


def _device_document(desc: DeviceDescription, components: Mapping[str, Any]) -> dict[str, Any]:
    return {"dev": _device_block(desc), "o": _origin_block(desc),
            "availability": _availability(desc), "qos": 1, "cmps": dict(components)}


def device_discovery(desc: DeviceDescription, prefix: str = DEFAULT_PREFIX) -> DiscoveryMessage:
    """The one device-based discovery document for ``desc``."""
    components = {e.object_id: {"p": e.platform, **e.options} for e in _entities(desc)}
    return DiscoveryMessage(_device_topic(desc, prefix), _device_document(desc, components))


def entity_discovery(desc: DeviceDescription,
                     prefix: str = DEFAULT_PREFIX) -> list[DiscoveryMessage]:
    """One per-entity discovery document per entity (for Home Assistant releases without device discovery)."""
    _check_prefix(prefix)
    out = []
    for entity in _entities(desc):
        config = {"availability": _availability(desc), **entity.options,
                  "dev": _device_block(desc), "o": _origin_block(desc), "qos": 1}
        topic = TopicTree.ha_discovery(entity.platform, desc.node, entity.object_id, prefix)
        out.append(DiscoveryMessage(topic, config))
    return out


def _check_mode(mode: str) -> None:
    if mode not in ("device", "entity"):
        raise ConfigError(f"home assistant discovery mode must be 'device' or 'entity', not "
                          f"{mode!r}")


def discovery_messages(desc: DeviceDescription, mode: DiscoveryMode = "device",
                       prefix: str = DEFAULT_PREFIX) -> list[DiscoveryMessage]:
    """What to publish (retained) so Home Assistant knows ``desc``, in ``mode``."""
    _check_mode(mode)
    return [device_discovery(desc, prefix)] if mode == "device" else entity_discovery(desc, prefix)


def removal_messages(previous: DeviceDescription, current: DeviceDescription | None,
                     mode: DiscoveryMode = "device",
                     prefix: str = DEFAULT_PREFIX) -> list[DiscoveryMessage]:
    """What to publish before ``current``'s discovery so entities ``previous`` had are deleted.

    ``current`` None removes the device entirely (empty retained payloads, which
    also clear the broker's retained copies). In device mode a vanished entity
    is removed by one update in which it is reduced to its platform, as Home
    Assistant documents; publish :func:`discovery_messages` right after it so
    the retained document no longer mentions it.
    """
    _check_mode(mode)
    _check_prefix(prefix)
    if current is not None and current.device != previous.device:
        raise ConfigError("removal_messages compares two descriptions of the same device")
    gone = [(e.platform, e.object_id) for e in _entities(previous)]
    if current is None:
        if mode == "device":
            return [DiscoveryMessage(_device_topic(previous, prefix), None)]
    else:
        new_entities = _entities(current)
        new = {(e.platform, e.object_id) for e in new_entities}
        gone = [key for key in gone if key not in new]
        if gone and mode == "device":
            components: dict[str, Any] = {e.object_id: {"p": e.platform, **e.options}
                                          for e in new_entities}
            components.update({object_id: {"p": platform} for platform, object_id in gone})
            return [DiscoveryMessage(_device_topic(current, prefix),
                                     _device_document(current, components))]
    return [DiscoveryMessage(TopicTree.ha_discovery(platform, previous.node, object_id, prefix), None)
            for platform, object_id in gone]


#: What a device's retained discovery documents hold: each topic and the (platform, object id)
#: of every entity on it. Kept by the publisher across restarts (agents/home_assistant/).
Inventory = Mapping[str, tuple[tuple[str, str], ...]]


def discovery_inventory(desc: DeviceDescription, mode: DiscoveryMode = "device",
                        prefix: str = DEFAULT_PREFIX) -> dict[str, tuple[tuple[str, str], ...]]:
    """The topics :func:`discovery_messages` publishes for ``desc`` and the entities on each."""
    _check_mode(mode)
    _check_prefix(prefix)
    entities = tuple((e.platform, e.object_id) for e in _entities(desc))
    if mode == "device":
        return {_device_topic(desc, prefix): entities}
    return {TopicTree.ha_discovery(platform, desc.node, object_id, prefix): ((platform, object_id),)
            for platform, object_id in entities}


def stale_messages(previous: Inventory, desc: DeviceDescription, mode: DiscoveryMode = "device",
                   prefix: str = DEFAULT_PREFIX) -> list[DiscoveryMessage]:
    """What to publish before ``desc``'s discovery so nothing in ``previous`` outlives it.

    ``previous`` is what was published last, perhaps by an earlier run in the other
    mode or under another prefix. A topic no longer used gets an empty retained
    payload (Home Assistant removes its entities and the broker forgets it); on a
    device document that stays, vanished entities are reduced to their platform
    once, as Home Assistant documents. Clearing first is what lets an agent switch
    between device and per-entity discovery without "conflicting discovery"
    warnings: the same entity never has two documents at once.
    """
    current = discovery_inventory(desc, mode, prefix)
    out: list[DiscoveryMessage] = []
    for topic, entities in previous.items():
        if topic not in current:
            out.append(DiscoveryMessage(topic, None))
            continue
        gone = [entity for entity in entities if entity not in current[topic]]
        if gone and mode == "device":
            components: dict[str, Any] = {e.object_id: {"p": e.platform, **e.options}
                                          for e in _entities(desc)}
            components.update({object_id: {"p": platform} for platform, object_id in gone})
            out.append(DiscoveryMessage(topic, _device_document(desc, components)))
    return out


# -- the readable state topics the entities read -----------------------------


def _json_number(key: str, value: object) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"state value {key!r} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None renders as Home Assistant's "unknown"
    return value


def metrics_state_payload(values: Mapping[str, float | int]) -> bytes:
    """The ``state/metrics`` JSON: a flat ``{metric: latest value}`` object, keys sorted.

    Non-finite values become ``null``. Names are checked like metric names.
    """
    body = {}
    for key in sorted(values):
        try:
            validate_name(key, "metric name")
        except TopicError as exc:
            raise CodecError(str(exc)) from None
        body[key] = _json_number(key, values[key])
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def camera_state_payload(counts: Mapping[str, int], labels: Iterable[str] = ()) -> bytes:
    """The ``state/{camera}_objects`` JSON: ``{label: count}``; ``labels`` not counted read 0."""
    body: dict[str, int] = {label: 0 for label in labels}
    for label, count in counts.items():
        try:
            validate_name(label, "label")
        except TopicError as exc:
            raise CodecError(str(exc)) from None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise CodecError(f"count of {label!r} must be a non-negative integer, not {count!r}")
        body[label] = count
    return json.dumps(dict(sorted(body.items())), separators=(",", ":")).encode()
