"""Builds a running agent from its configuration: runtime plus the parts it hosts.

Kept apart from the runtime so the runtime stays testable with no Home
Assistant, no cameras and no command handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.collectors.base import CollectorContext, create_collector
from agents.commands.host import CommandHost
from agents.config import AgentConfig
from agents.extension import AgentExtension
from agents.home_assistant.host import HomeAssistantHost
from agents.runtime import Agent, agent_version
from broker.session import ENVELOPE_CONTENT_TYPE
from schemas.errors import ConfigError

__all__ = ["build_agent", "describe", "load_config"]

logger = logging.getLogger(__name__)


def load_config(path: Path) -> AgentConfig:
    """Load and fully check ``path``: collectors check their own tables here, not at run time."""
    config = AgentConfig.load(path)
    for name in config.metrics.collectors:
        try:
            create_collector(name, config.metrics.collector_options.get(name, {}), CollectorContext())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    try:
        parse_cameras(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config


def parse_cameras(config: AgentConfig, tables: Sequence[Mapping[str, Any]] | None = None) -> list[Any]:
    """The configured cameras (or ``tables``), checked; needs the ``[camera]`` extra only when there
    are any."""
    tables = config.cameras if tables is None else tables
    if not tables:
        return []
    try:
        from agents.camera.host import parse_camera
    except ImportError as exc:
        raise ConfigError(f"cameras are configured but the camera extra is missing ({exc}); "
                          "install it with: pip install 'edgebus[camera]'") from exc
    return [parse_camera(table, f"cameras[{i}]") for i, table in enumerate(tables)]


def build_agent(config: AgentConfig) -> Agent:
    """The agent with its parts: cameras (when the camera extra is installed), Home
    Assistant discovery (unless disabled), command handling and over-the-air updates
    (unless ``[ota] enabled = false``)."""
    agent = Agent(config)
    assignments: Any = None
    if config.transactions.group:
        # Committed camera moves outlive restarts: they overlay agent.toml's cameras.
        from agents.camera.assignments import CameraAssignments

        assignments = CameraAssignments(config.device.data_dir / "camera-assignments.json")
    cameras = parse_cameras(config, assignments.cameras(config.cameras) if assignments else None)
    host: Any = None

    def advertise_cameras(running: list[str]) -> None:
        # "cameras" in the birth means: runs cameras (or takes part in moving them), not merely
        # has the camera extra installed. The next birth (reconnection, rebirth) carries it.
        if running and "cameras" not in agent.capabilities:
            agent.capabilities.append("cameras")

    try:
        from agents.camera.host import CameraHost

        fenced = bool(config.transactions.placement_lease_s)  # nothing runs before the placement is read
        host = CameraHost(agent.session, cameras, on_cameras=advertise_cameras, start_suspended=fenced,
                          limits=config.commands)
    except ImportError:
        logger.info("camera extra not installed: this agent serves no cameras")
    if host is not None:
        agent.add_extension(host)
        if cameras or config.transactions.group:
            agent.capabilities.append("cameras")
        backends = {str(c.config.detector.get("type")): dict(c.config.detector) for c in cameras}
        if backends:
            agent.add_extension(DetectorTiming(agent, sorted(backends.items())))
        if assignments is not None:
            from agents.camera.transactions import TransactionsHost

            agent.add_extension(TransactionsHost(agent.session, config.transactions.group, config.device.id,
                                                 host, assignments, config.device.data_dir))
            agent.capabilities.append("transactions")
            if config.transactions.placement_lease_s:
                from agents.camera.placement_fence import PlacementFence

                agent.add_extension(PlacementFence(agent.session, config.transactions.group, config.device.id,
                                                   host, assignments, config.transactions.placement_lease_s))
    elif config.transactions.group:
        raise ConfigError("transactions.group is set but the camera extra is missing: camera moves need "
                          "it (pip install 'edgebus[camera]')")
    rebirth_also: list[Any] = []
    if config.home_assistant.enabled:
        ha = HomeAssistantHost(agent.session, config, agent_version(),
                               cameras=host.labels if host is not None else lambda: ())
        agent.add_extension(ha)
        rebirth_also.append(ha.publish_discovery)
    commands = CommandHost(
        agent, assign=host.assign if host is not None else None,
        unassign=host.unassign if host is not None else None, on_rebirth=tuple(rebirth_also))
    agent.add_extension(commands)
    agent.capabilities.append("commands")
    if config.ota.enabled:
        from agents.ota.host import OtaHost

        agent.add_extension(OtaHost(agent, config.ota, commands.dispatcher,
                                    on_model=host.reload_model if host is not None else None))
        agent.capabilities.append("ota")
    return agent


class DetectorTiming(AgentExtension):
    """Times the cameras' detector backends after start and re-publishes the birth with the figures."""

    name = "detector-timing"

    def __init__(self, agent: Agent, backends: list[tuple[str, dict[str, Any]]]) -> None:
        self.agent = agent
        self.backends = backends

    def start(self) -> None:
        from agents.detectors.base import create_detector

        session = self.agent.session
        self.agent.capacity.measure_detectors(
            self.backends, create_detector,
            then=lambda: session.publish(session.topics.birth(self.agent.device), self.agent.birth(),
                                         qos=1, retain=True, content_type=ENVELOPE_CONTENT_TYPE))


def describe(config: AgentConfig) -> str:
    """A short human summary of what the configuration will do."""
    b, m = config.broker, config.metrics
    lines = [
        f"device {config.device.id} ({config.device.name}); state in {config.device.data_dir}",
        f"broker {b.host}:{b.port} as {b.username or '(anonymous)'}, MQTT {b.protocol}, "
        f"outbox {b.outbox_path} (max {b.outbox_max_messages} messages)",
        f"metrics every {m.interval:g} s, published every {m.batch_interval:g} s: "
        f"{', '.join(m.collectors)}"
        + (f"; report by exception (deadband {m.deadband:g}, heartbeat {m.heartbeat:g} s)"
           if m.report_by_exception else ""),
        f"home assistant: {config.home_assistant.mode} discovery under {config.home_assistant.prefix}/"
        if config.home_assistant.enabled else "home assistant: off",
        f"cameras: {len(config.cameras)}",
        f"over-the-air updates: slots in {config.ota.prefix}, keys {config.ota.trusted_keys}"
        if config.ota.enabled else "over-the-air updates: off",
    ]
    return "\n".join(lines)
