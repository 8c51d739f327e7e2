"""The agent's configuration file (``agent.toml``): strict, with the bad key named.

An operator who types ``intervall = 5`` must hear about it at start, not find
out a week later that the default was used. Every table rejects keys it does
not know; values are type-checked with the key's full path in the message.
Camera tables are checked by the camera pipeline's own configuration class
when the camera extra is installed.

Example (``edge-agent example-config`` prints a complete one)::

    [device]
    id = "gw-1"

    [broker]
    host = "broker.local"
    username = "gw-1"
    password = "..."
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config_file import load_toml
from broker.config_values import check_section_keys, float_option, int_option, section_table
from broker.session import BusConfig
from schemas.errors import ConfigError, TopicError
from schemas.topics import validate_device_id, validate_name

__all__ = ["AgentConfig", "CommandsConfig", "DeviceConfig", "HomeAssistantConfig", "MetricsConfig",
           "OtaConfig", "SheddingConfig", "TransactionsConfig"]

DEFAULT_COLLECTORS = ("cpu", "memory", "disk", "temperature", "network", "battery", "agent")
DEFAULT_OTA_PREFIX = "/opt/edgebus"
DEFAULT_TRUSTED_KEYS = "/etc/edgebus/trusted_keys.json"
#: The longest interval any periodic setting may have: a day. A longer one (or inf, which a
#: ``config`` command can carry in msgpack) would silently stop the work it schedules.
MAX_INTERVAL_S = 86_400.0


def _interval(section: str, key: str, data: Mapping[str, Any], default: float) -> float:
    """A period in seconds: finite, in (0, :data:`MAX_INTERVAL_S`]."""
    return float_option(section, data, key, default, low=0.0, high=MAX_INTERVAL_S, low_open=True)


def _bool(section: str, key: str, data: Mapping[str, Any], default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key} must be true or false, not {value!r}")
    return value


def _str(section: str, key: str, data: Mapping[str, Any], default: str | None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{section}.{key} must be a string, not {value!r}")
    return value


def _groups(data: Mapping[str, Any]) -> tuple[str, ...]:
    groups = data.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ConfigError(f"device.groups must be a list of names, e.g. [\"lobby\"], not {groups!r}")
    for group in groups:
        try:
            validate_name(group, "group")
        except TopicError as exc:
            raise ConfigError(f"device.groups: {exc}") from exc
    return tuple(dict.fromkeys(groups))


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    name: str
    model: str
    data_dir: Path
    #: Names an update can be addressed to (``edge-flash ota publish --to lobby``); in the birth.
    groups: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeviceConfig:
        check_section_keys("device", data, {"id", "name", "model", "data_dir", "groups"})
        device_id = data.get("id")
        if not isinstance(device_id, str):
            raise ConfigError("device.id is required: the name this device has on the bus")
        try:
            validate_device_id(device_id)
        except TopicError as exc:
            raise ConfigError(f"device.id: {exc}") from exc
        return cls(id=device_id, name=_str("device", "name", data, device_id) or device_id,
                   model=_str("device", "model", data, "") or "",
                   data_dir=Path(_str("device", "data_dir", data, f"data/agent-{device_id}") or "."),
                   groups=_groups(data))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    interval: float = 1.0
    batch_interval: float = 5.0
    collectors: tuple[str, ...] = DEFAULT_COLLECTORS
    collector_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    report_by_exception: bool = False
    deadband: float = 0.0
    deadbands: Mapping[str, float] = field(default_factory=dict)
    heartbeat: float = 60.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MetricsConfig:
        s = "metrics"
        collectors = data.get("collectors", list(DEFAULT_COLLECTORS))
        if not isinstance(collectors, list) or not all(isinstance(c, str) for c in collectors):
            raise ConfigError("metrics.collectors must be a list of names, e.g. [\"cpu\", \"memory\"]")
        plain = {"interval", "batch_interval", "collectors", "report_by_exception", "deadband",
                 "deadbands", "heartbeat"}
        options: dict[str, Mapping[str, Any]] = {}
        for key, value in data.items():
            if key in plain:
                continue
            if (key in DEFAULT_COLLECTORS or key in collectors) and isinstance(value, dict):
                options[key] = value  # [metrics.disk] and friends; the collector checks its keys
                continue
            check_section_keys(s, {key: value}, plain | {f"{c} (table)" for c in DEFAULT_COLLECTORS})
        deadbands = section_table("metrics.deadbands", data.get("deadbands"))
        bands = {name: float_option("metrics.deadbands", deadbands, name, 0.0, low=0.0, high=math.inf)
                 for name in deadbands}
        interval = _interval(s, "interval", data, 1.0)
        batch_interval = _interval(s, "batch_interval", data, max(5.0, interval))
        if batch_interval < interval:
            raise ConfigError(f"metrics.batch_interval ({batch_interval}) must be >= metrics.interval "
                              f"({interval})")
        return cls(interval=interval, batch_interval=batch_interval, collectors=tuple(collectors),
                   collector_options=options,
                   report_by_exception=_bool(s, "report_by_exception", data, False),
                   deadband=float_option(s, data, "deadband", 0.0, low=0.0, high=math.inf),
                   deadbands=bands,
                   heartbeat=_interval(s, "heartbeat", data, 60.0))


@dataclass(frozen=True, slots=True)
class SheddingConfig:
    """``[shedding]``: thresholds on the agent's own pressure and the dwell (see agents/shedding.py)."""

    enabled: bool = True
    high: float = 0.90
    low: float = 0.75
    #: Seconds a shedding level holds before it may change again, so noisy readings cannot flap it.
    dwell: float = 10.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SheddingConfig:
        s = "shedding"
        check_section_keys(s, data, {"enabled", "high", "low", "dwell"})
        high = float_option(s, data, "high", 0.90, low=0.0, high=1.0, low_open=True)
        low = float_option(s, data, "low", 0.75, low=0.0, high=1.0, low_open=True)
        if low >= high:
            raise ConfigError(f"shedding.low ({low}) must be below shedding.high ({high})")
        return cls(enabled=_bool(s, "enabled", data, True), high=high, low=low,
                   dwell=float_option(s, data, "dwell", 10.0, low=0.0, high=3600.0))


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    enabled: bool = True
    mode: str = "device"
    prefix: str = "homeassistant"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> HomeAssistantConfig:
        s = "home_assistant"
        check_section_keys(s, data, {"enabled", "mode", "prefix"})
        mode = _str(s, "mode", data, "device")
        if mode not in ("device", "entity"):
            raise ConfigError(f"home_assistant.mode must be 'device' or 'entity', not {mode!r}")
        return cls(enabled=_bool(s, "enabled", data, True), mode=mode,
                   prefix=_str(s, "prefix", data, "homeassistant") or "homeassistant")


@dataclass(frozen=True, slots=True)
class OtaConfig:
    """Over-the-air updates: where the A/B slots live, whom to trust, how to pull.

    ``health_window`` None means: as long as the update's manifest asks for.
    """

    enabled: bool = True
    prefix: Path = Path(DEFAULT_OTA_PREFIX)
    trusted_keys: Path = Path(DEFAULT_TRUSTED_KEYS)
    window: int = 8
    request_timeout: float = 5.0
    health_window: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> OtaConfig:
        s = "ota"
        check_section_keys(s, data, {"enabled", "prefix", "trusted_keys", "window", "request_timeout",
                                     "health_window"})
        health = None if "health_window" not in data else _interval(s, "health_window", data, 60.0)
        return cls(enabled=_bool(s, "enabled", data, True),
                   prefix=Path(_str(s, "prefix", data, DEFAULT_OTA_PREFIX) or DEFAULT_OTA_PREFIX),
                   trusted_keys=Path(_str(s, "trusted_keys", data, DEFAULT_TRUSTED_KEYS)
                                     or DEFAULT_TRUSTED_KEYS),
                   window=int_option(s, data, "window", 8, low=1, high=1024),  # chunks in flight
                   request_timeout=float_option(s, data, "request_timeout", 5.0, low=0.0, high=3600.0,
                                                low_open=True),
                   health_window=health)


@dataclass(frozen=True, slots=True)
class TransactionsConfig:
    """Two-phase commit: ``group`` is the Raft group whose transactions this agent takes part in
    (camera moves); empty means the agent is no participant. Its participant id is its device id."""

    group: str = ""
    #: The placement fence (agents/camera/placement_fence.py) for fleets the coordinator balances: seconds
    #: cut off from the broker after which the cameras stop; below the coordinator's evacuate_after_ms.
    #: 0: off.
    placement_lease_s: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TransactionsConfig:
        s = "transactions"
        check_section_keys(s, data, {"group", "placement_lease_s"})
        group = _str(s, "group", data, "") or ""
        if group:
            try:
                validate_name(group, "transactions.group")
            except TopicError as exc:
                raise ConfigError(str(exc)) from exc
        lease = float_option(s, data, "placement_lease_s", 0.0, low=0.0, high=3600.0)
        if lease and not group:
            raise ConfigError("transactions.placement_lease_s needs transactions.group (the balanced group)")
        return cls(group=group, placement_lease_s=lease)


def _patterns(section: str, key: str, data: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{section}.{key} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    """``[commands]``: what a command over the bus may ask of this device (agents/commands/bounds.py).

    A ``config`` command may not set a period below the ``min_*`` values (the file may:
    it is the operator's); an ``assign`` (or a camera moved here) may use only the
    sources ``camera_devices`` (globs), ``camera_folders`` and ``camera_urls``
    (prefixes) allow, at most ``max_fps``, and the agent runs at most ``max_cameras``.
    """

    min_interval: float = 1.0
    min_batch_interval: float = 1.0
    min_heartbeat: float = 10.0
    max_fps: float = 30.0
    max_cameras: int = 8
    camera_devices: tuple[str, ...] = ("/dev/video*",)
    camera_folders: tuple[str, ...] = ()
    camera_urls: tuple[str, ...] = ("rtsp://", "rtsps://")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CommandsConfig:
        s = "commands"
        d = cls()
        check_section_keys(s, data, set(cls.__slots__))
        folders = _patterns(s, "camera_folders", data, d.camera_folders)
        relative = [f for f in folders if not Path(f).expanduser().is_absolute()]
        if relative:
            raise ConfigError(f"commands.camera_folders must be absolute paths, not {relative[0]!r}")
        return cls(min_interval=_interval(s, "min_interval", data, d.min_interval),
                   min_batch_interval=_interval(s, "min_batch_interval", data, d.min_batch_interval),
                   min_heartbeat=_interval(s, "min_heartbeat", data, d.min_heartbeat),
                   max_fps=float_option(s, data, "max_fps", d.max_fps, low=0.0, high=1000.0, low_open=True),
                   max_cameras=int_option(s, data, "max_cameras", d.max_cameras, low=0, high=1024),
                   camera_devices=_patterns(s, "camera_devices", data, d.camera_devices),
                   camera_folders=folders,
                   camera_urls=_patterns(s, "camera_urls", data, d.camera_urls))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device: DeviceConfig
    broker: BusConfig
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    shedding: SheddingConfig = field(default_factory=SheddingConfig)
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    cameras: tuple[Mapping[str, Any], ...] = ()
    ota: OtaConfig = field(default_factory=OtaConfig)
    transactions: TransactionsConfig = field(default_factory=TransactionsConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        data = load_toml(path)
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AgentConfig:
        check_section_keys("(top level)", data,
                    {"device", "broker", "metrics", "shedding", "home_assistant", "cameras", "ota",
                     "transactions", "commands"})
        device = DeviceConfig.from_mapping(section_table("device", data.get("device")))
        broker_data = dict(section_table("broker", data.get("broker")))
        if "device" in broker_data:
            raise ConfigError("broker.device is not used by the agent: set device.id instead")
        broker_data.setdefault("outbox_path", str(device.data_dir / "outbox.sqlite"))
        broker = BusConfig.from_mapping({**broker_data, "device": device.id})
        cameras = data.get("cameras", [])
        if not isinstance(cameras, list) or not all(isinstance(c, dict) for c in cameras):
            raise ConfigError("cameras must be an array of tables ([[cameras]])")
        commands = CommandsConfig.from_mapping(section_table("commands", data.get("commands")))
        if len(cameras) > commands.max_cameras:
            raise ConfigError(f"{len(cameras)} [[cameras]] configured; commands.max_cameras is "
                              f"{commands.max_cameras}")
        return cls(device=device, broker=broker,
                   metrics=MetricsConfig.from_mapping(section_table("metrics", data.get("metrics"))),
                   shedding=SheddingConfig.from_mapping(section_table("shedding", data.get("shedding"))),
                   home_assistant=HomeAssistantConfig.from_mapping(
                       section_table("home_assistant", data.get("home_assistant"))),
                   cameras=tuple(cameras),
                   ota=OtaConfig.from_mapping(section_table("ota", data.get("ota"))),
                   transactions=TransactionsConfig.from_mapping(
                       section_table("transactions", data.get("transactions"))),
                   commands=commands)
