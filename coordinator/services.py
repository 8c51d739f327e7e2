"""What runs beside ingest in ``edge-coordinator start``: periodic jobs, actions, Home Assistant sensors.

* the pyod batch detector over each device's stored history (``[anomaly.batch]``,
  :mod:`coordinator.batch_job`), its alerts stored and published like the online ones;
* the store's retention policy, every ``RETENTION_INTERVAL_S``;
* anomaly actions (``[[actions]]``, :mod:`coordinator.actions`);
* Home Assistant anomaly binary sensors (``[home_assistant]``, :mod:`coordinator.ha_anomalies`),
  cleared by a periodic tick.

The anomaly checkpoint stays with :class:`~coordinator.processor.FleetProcessor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.scheduler import SchedulerThread
from broker.session import BusSession
from coordinator.actions import ActionRule, Actions
from coordinator.batch_job import BatchJob, BatchJobConfig
from coordinator.ha_anomalies import AnomalySensors, HomeAssistantConfig
from coordinator.known_devices import KnownDevices
from coordinator.processor import FleetProcessor
from coordinator.store.base import Store

__all__ = ["RETENTION_INTERVAL_S", "Services", "ServicesConfig"]

logger = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0
HA_TICK_S = 5.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ServicesConfig:
    """The parsed ``[anomaly.batch]``, ``[[actions]]`` and ``[home_assistant]`` tables."""

    batch: BatchJobConfig = field(default_factory=BatchJobConfig)
    actions: tuple[ActionRule, ...] = ()
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)


class Services:
    """Builds the pieces, hooks them to the processor and ingest, runs the scheduler."""

    def __init__(self, session: BusSession, processor: FleetProcessor, store: Store, config: ServicesConfig,
                 *, clock: Callable[[], float] = time.monotonic,
                 wall_clock_ms: Callable[[], int] = _wall_ms) -> None:
        self.processor = processor
        self.store = store
        self._now_ms = wall_clock_ms
        self.known = KnownDevices()
        self.scheduler = SchedulerThread(clock, name="coordinator-periodic")
        self.batch: BatchJob | None = None
        if config.batch.enabled:
            self.batch = BatchJob(config.batch, store, processor.metrics_by_device, processor.record_alerts,
                                  wall_clock_ms)
            self.scheduler.every("batch anomalies", config.batch.interval_s, self.batch)
        self.scheduler.every("retention", RETENTION_INTERVAL_S, self.apply_retention, first_after_s=60.0)
        self.actions: Actions | None = None
        if config.actions:
            self.actions = Actions(session, config.actions, self.known.snapshot, clock=clock,
                                   wall_clock_ms=wall_clock_ms)
            processor.alert_listeners.append(self.actions)
        self.sensors: AnomalySensors | None = None
        if config.home_assistant.enabled:
            self.sensors = AnomalySensors(session, config.home_assistant, episode_open=processor.episode_open,
                                          clock=clock)
            self.known.on_new.append(self.sensors.on_device)
            processor.alert_listeners.append(self.sensors.on_alert)
            self.scheduler.every("anomaly sensors", HA_TICK_S, self.sensors.tick)

    def apply_retention(self) -> None:
        with self.processor.write_lock:
            result = self.store.apply_retention(self._now_ms())
        logger.info("retention: %s", result)

    def start(self) -> None:
        """Start the scheduler; devices already in the store count as known (actions, sensors)."""
        self.known.add({device.id for device in self.store.devices()})
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def summary(self) -> str:
        parts = []
        if self.batch is not None:
            parts.append(f"batch runs={self.batch.runs} batch alerts={self.batch.alerts}")
        if self.actions is not None:
            parts.append(f"actions fired={self.actions.fired} commands={self.actions.commands_sent} "
                         f"suppressed={self.actions.suppressed}")
        return " ".join(parts)
