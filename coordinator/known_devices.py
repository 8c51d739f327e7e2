"""The devices the coordinator has heard a birth or a status from (an ingest sink)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from coordinator.ingest import IngestBatch

__all__ = ["KnownDevices"]

logger = logging.getLogger(__name__)


class KnownDevices:
    """Thread-safe set of device ids; ``on_new`` listeners hear each device once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: set[str] = set()
        self.on_new: list[Callable[[str], None]] = []

    def __call__(self, batch: IngestBatch) -> None:
        seen = {b.device for b in batch.births} | {device for device, _status, _ms in batch.statuses}
        self.add(seen)

    def add(self, devices: set[str]) -> None:
        """Record ``devices``; tell the listeners about the ones not known before."""
        with self._lock:
            new = sorted(devices - self._devices)
            self._devices.update(new)
        for device in new:
            logger.debug("new device %s", device)
            for listener in self.on_new:
                try:
                    listener(device)
                except Exception:
                    logger.exception("new-device listener %r failed on %s", listener, device)

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._devices)
