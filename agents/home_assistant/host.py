"""Hosts Home Assistant discovery in the agent: describe what the device really reports.

Metric names are only known once the collectors have run (temperature sensor
names differ per board, rates need two readings), and cameras come and go with
``assign``; so the description is rebuilt from what was seen, discovery is
first published at the first state round (after two samples: complete, once,
rather than an empty device first), and re-published only when that set
changes. What was published is recorded in ``{data_dir}/home-assistant.json``
so the next run clears what it no longer needs (a switch of ``mode``, a camera
gone while the agent was down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from agents.config import AgentConfig
from agents.extension import AgentExtension
from agents.home_assistant.publisher import HomeAssistantPublisher
from broker.session import BusSession
from schemas.ha_discovery import CameraEntities, DeviceDescription, describe_metric

__all__ = ["HomeAssistantHost"]

logger = logging.getLogger(__name__)

#: Where the agent records the discovery documents it published (in its data_dir).
LEDGER_NAME = "home-assistant.json"
#: (camera name, labels it reports) for every running camera.
CameraLister = Callable[[], Sequence[tuple[str, tuple[str, ...]]]]


class HomeAssistantHost(AgentExtension):
    name = "home_assistant"

    def __init__(self, session: BusSession, config: AgentConfig, sw_version: str,
                 cameras: CameraLister = lambda: ()) -> None:
        self.session = session
        self.config = config
        self.sw_version = sw_version
        self.cameras = cameras
        self._metric_names: tuple[str, ...] = ()
        self._camera_set: tuple[tuple[str, tuple[str, ...]], ...] = tuple(cameras())
        self._published = False
        self.publisher = HomeAssistantPublisher(
            session, self._describe(), mode="device" if config.home_assistant.mode == "device"
            else "entity", discovery_prefix=config.home_assistant.prefix,
            ledger=config.device.data_dir / LEDGER_NAME)

    def _describe(self) -> DeviceDescription:
        device = self.config.device
        return DeviceDescription(
            device=device.id, sw_version=self.sw_version, model=device.model or "edgebus agent",
            name=device.name, root=self.session.topics.root,
            metrics=tuple(describe_metric(name) for name in self._metric_names),
            cameras=tuple(CameraEntities(name, labels) for name, labels in self._camera_set))

    def stop(self) -> None:
        self.publisher.stop()

    def publish_discovery(self) -> int:
        """Publish discovery again (the ``rebirth`` command); nothing before the first state round."""
        return self.publisher.publish_discovery() if self._published else 0

    def on_state(self, latest_metrics: Mapping[str, float]) -> None:
        names = tuple(sorted(latest_metrics))
        cameras = tuple(sorted(self.cameras()))
        if not self._published:
            # The first round: the description is complete now. start() publishes it
            # (and again on every reconnection and Home Assistant birth).
            self._metric_names, self._camera_set = names, cameras
            self.publisher.update_description(self._describe(), publish=False)
            self.publisher.start()
            self._published = True
            logger.info("Home Assistant discovery: %d metrics, %d cameras", len(names), len(cameras))
        elif names != self._metric_names or cameras != self._camera_set:
            self._metric_names, self._camera_set = names, cameras
            accepted = self.publisher.update_description(self._describe())
            logger.info("Home Assistant discovery updated: %d metrics, %d cameras (%d messages)",
                        len(names), len(cameras), accepted)
        if latest_metrics:
            self.publisher.publish_metrics_state(latest_metrics)
