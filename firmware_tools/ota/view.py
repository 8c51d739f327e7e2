"""The rollout's progress as a person watches it: a live view on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TextIO

from firmware_tools.ota.transfer import DeviceTransfer

__all__ = ["ProgressView"]

logger = logging.getLogger(__name__)


class ProgressView:
    """One line per device, redrawn in place on a terminal; log lines on phase changes otherwise."""

    def __init__(self, out: TextIO | None, interval: float = 0.5, log_interval: float = 10.0) -> None:
        self.out = out
        self.tty = bool(out is not None and out.isatty())
        self.interval = interval
        self.log_interval = log_interval
        self._drawn = 0
        self._last_draw = -math.inf
        self._last_log: dict[str, tuple[str, float]] = {}

    def update(self, transfers: Iterable[DeviceTransfer], now: float, force: bool = False) -> None:
        items = list(transfers)
        if self.tty and self.out is not None:
            if not force and now - self._last_draw < self.interval:
                return
            self._last_draw = now
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            for t in items:
                pct = 100 * t.received / t.total if t.total else 0.0
                reason = f"  {t.reason}" if t.reason else ""
                self.out.write(f"\x1b[K{t.device}: {t.phase:<11} {t.received}/{t.total} chunks "
                               f"({pct:5.1f}%){reason}\n")
            self.out.flush()
            self._drawn = len(items)
            return
        for t in items:
            phase, at = self._last_log.get(t.device, ("", -math.inf))
            if t.phase != phase or (t.phase == "downloading" and now - at >= self.log_interval):
                self._last_log[t.device] = (t.phase, now)
                logger.info("ota %s: phase=%s received=%d/%d%s", t.device, t.phase, t.received, t.total,
                            f" reason={t.reason}" if t.reason else "")
