"""A live picture of the fleet from its streams: who is online, rates, loss, anomalies.

:class:`FleetView` is an ingest sink: it reads each :class:`~coordinator.ingest.IngestBatch`
and renders a full-screen table for a terminal or a one-line summary for logs.
Loss and duplicates come from the ingest's own sequence accounting, so the view
and the store agree on what arrived. Given a ``forecast`` source, the table also
shows each device's next-minute forecast interval for one metric, computed
when the table is rendered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.anomaly.base import ForecastPoint
from coordinator.ingest import IngestBatch
from schemas.sequence import DeviceSequence

__all__ = ["DeviceLive", "FleetView"]

RATE_WINDOW_S = 5.0

#: Reads the ingest's per-stream sequence accounting (a consistent copy).
SequenceSource = Callable[[], dict[str, DeviceSequence]]
#: ``(device, metric) -> the forecast a minute ahead`` (None when there is none yet).
ForecastSource = Callable[[str, str], ForecastPoint | None]


@dataclass(slots=True)
class DeviceRow:
    """What the view shows for one device."""

    status: str = "?"
    agent_version: str = ""
    samples: int = 0
    last_seen: float = 0.0
    last_values: dict[str, float] = field(default_factory=dict)
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    anomalies: int = 0


@dataclass(frozen=True, slots=True)
class DeviceLive:
    """A copy of one device's row, for readers on other threads (the HTTP API)."""

    status: str
    agent_version: str
    samples: int
    samples_per_s: float
    last_values: dict[str, float]
    anomalies: int
    #: Seconds since its last samples arrived (None before any did).
    age_s: float | None


class FleetView:
    """Thread-safe fleet state: feed it ingest batches, read a rendering."""

    def __init__(self, sequences: SequenceSource, clock: Callable[[], float] = time.monotonic, *,
                 forecast: ForecastSource | None = None, forecast_metric: str = "cpu_percent") -> None:
        self._sequences = sequences
        self._forecast = forecast
        self.forecast_metric = forecast_metric
        self._clock = clock
        self._lock = threading.Lock()
        self.devices: dict[str, DeviceRow] = {}
        self.invalid = 0
        self.last_invalid = ""
        self.anomalies = 0
        self.last_anomaly = ""
        self.started = clock()

    def _row(self, device: str) -> DeviceRow:
        row = self.devices.get(device)
        if row is None:
            row = self.devices[device] = DeviceRow()
        return row

    def __call__(self, batch: IngestBatch) -> None:
        now = self._clock()
        with self._lock:
            for device, status, _ms in batch.statuses:
                self._row(device).status = status[:16]
            for birth in batch.births:
                self._row(birth.device).agent_version = birth.agent_version
            per_device: dict[str, int] = {}
            # Column runs, not a row per sample: this sink sees every sample at ingest rate.
            for run in batch.metric_runs:
                last = dict(zip(run.name_index, run.values, strict=True))  # the last value of each name
                values = self._row(run.device).last_values
                for k, value in last.items():
                    values[run.names[k]] = value
                per_device[run.device] = per_device.get(run.device, 0) + len(run.times)
            for device, n in per_device.items():
                row = self._row(device)
                row.samples += n
                row.last_seen = now
                row.arrivals.append((now, n))
            for letter in batch.dead_letters:
                self.invalid += 1
                self.last_invalid = f"{letter.topic}: {letter.reason}: {letter.error[:120]}"

    def on_anomaly(self, device: str, text: str) -> None:
        with self._lock:
            self._row(device).anomalies += 1
            self.anomalies += 1
            self.last_anomaly = f"{device}: {text}"

    def _rate(self, row: DeviceRow, now: float) -> float:
        while row.arrivals and row.arrivals[0][0] < now - RATE_WINDOW_S:
            row.arrivals.popleft()
        window = min(RATE_WINDOW_S, max(now - self.started, 1e-9))
        return sum(n for _, n in row.arrivals) / window

    def live(self) -> dict[str, DeviceLive]:
        """Every device's row as it stands now (copies)."""
        now = self._clock()
        with self._lock:
            return {name: DeviceLive(row.status, row.agent_version, row.samples, self._rate(row, now),
                                     dict(row.last_values), row.anomalies,
                                     now - row.last_seen if row.last_seen else None)
                    for name, row in self.devices.items()}

    def summary(self) -> str:
        """One line for logs and non-terminal output."""
        now = self._clock()
        sequences = self._sequences()
        with self._lock:
            rate = sum(self._rate(r, now) for r in self.devices.values())
            online = sum(1 for r in self.devices.values() if r.status == "online")
            return (f"devices={len(self.devices)} online={online} samples/s={rate:.0f} "
                    f"received={sum(s.received for s in sequences.values())} "
                    f"missing={sum(s.missing for s in sequences.values())} "
                    f"duplicates={sum(s.duplicates for s in sequences.values())} "
                    f"invalid={self.invalid} anomalies={self.anomalies}")

    def _forecasts(self) -> dict[str, str]:
        """Each device's forecast interval as text (read outside the view's lock: it takes the engine's)."""
        if self._forecast is None:
            return {}
        with self._lock:
            names = sorted(self.devices)
        out = {}
        for name in names:
            point = self._forecast(name, self.forecast_metric)
            if point is not None:
                out[name] = f"{point.mean:.1f} [{point.low:.1f}, {point.high:.1f}]"
        return out

    def table(self, width_metrics: tuple[str, ...] = ("cpu_percent", "temp_c")) -> str:
        """A multi-line table for a terminal."""
        now = self._clock()
        sequences = self._sequences()
        forecast_head = f"  {self.forecast_metric + ' in 1m':>19}" if self._forecast else ""
        lines = [
            f"{'device':<16} {'status':<8} {'samples/s':>9} {'received':>9} {'missing':>8} "
            f"{'dups':>5} {'anom':>5} {'age':>5}  " + "  ".join(f"{m:>11}" for m in width_metrics)
            + forecast_head
        ]
        forecasts = self._forecasts()
        with self._lock:
            for name in sorted(self.devices):
                row = self.devices[name]
                seq = sequences.get(name)
                received, missing, dups = (seq.received, seq.missing, seq.duplicates) if seq else (0, 0, 0)
                age = f"{now - row.last_seen:4.0f}s" if row.last_seen else "    -"
                values = "  ".join(
                    f"{row.last_values[m]:>11.1f}" if m in row.last_values else f"{'-':>11}"
                    for m in width_metrics)
                if self._forecast is not None:
                    values += f"  {forecasts.get(name, '-'):>19}"
                lines.append(f"{name:<16} {row.status:<8} {self._rate(row, now):>9.1f} {received:>9} "
                             f"{missing:>8} {dups:>5} {row.anomalies:>5} {age:>5}  {values}")
            last_invalid, last_anomaly = self.last_invalid, self.last_anomaly
        lines.append("")
        lines.append(self.summary())
        if last_anomaly:
            lines.append(f"last anomaly: {last_anomaly}")
        if last_invalid:
            lines.append(f"last invalid message: {last_invalid}")
        return "\n".join(lines)
