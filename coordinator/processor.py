"""What the coordinator does with each ingest batch: score, store, announce.

Per batch, on the ingest's decoder thread, in this order:

1. every new sample is scored by the anomaly engine (score before learn);
2. samples, detections, events, births, statuses, dead letters, the alerts and
   the touched streams' sequence accounting go to the store in ONE transaction,
   so after a crash the store and the accounting agree on what arrived;
3. only then are the alerts published, as JSON on
   ``{root}/_anomaly/{device}/{metric}``, and shown in the live view.

The anomaly engine's state is checkpointed to ``anomaly.ckpt`` in the data
directory every ``checkpoint_interval`` seconds and on stop, and restored at
start, so a restart neither forgets what normal looks like nor re-scores
redelivered samples (the restored sequence accounting drops those).

The engine is not thread-safe: every use of it goes through ``engine_lock``
(the live view reads forecasts from another thread). Store writes from other
threads (the periodic batch detector, retention) go through ``write_lock``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from broker.session import BusSession
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import ForecastPoint
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.ingest import Ingest, IngestBatch
from coordinator.store.base import Store
from coordinator.store.records import WriteBatch
from schemas.errors import BusError, CodecError, UnsupportedVersion

__all__ = ["FleetProcessor"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "anomaly.ckpt"
#: The longest forecast the live view asks for, in samples.
MAX_FORECAST_STEPS = 3600


class FleetProcessor:
    """The ingest sink that scores, stores and announces (see the module docstring)."""

    def __init__(self, session: BusSession, ingest: Ingest, store: Store, engine: AnomalyEngine, *,
                 data_dir: Path, on_alert: Callable[[Alert], None] | None = None,
                 checkpoint_interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.ingest = ingest
        self.store = store
        self.engine = engine
        #: Called with every alert after it is stored and published (errors are logged, not raised).
        self.alert_listeners: list[Callable[[Alert], None]] = [on_alert] if on_alert is not None else []
        self.engine_lock = threading.RLock()
        self.write_lock = threading.RLock()
        #: Metric names seen per device (the batch detector reads each device's history by name).
        self.metric_names: dict[str, set[str]] = {}
        self.checkpoint_path = data_dir / CHECKPOINT_FILE
        self.checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._last_checkpoint = clock()
        self.alerts = 0
        self.stored_samples = 0

    def restore(self) -> None:
        """Load the anomaly checkpoint and the stored sequence accounting, if any."""
        if self.checkpoint_path.exists():
            try:
                with self.engine_lock:
                    self.engine.restore(self.checkpoint_path.read_bytes())
                logger.info("anomaly detectors restored: %d streams", self.engine.stream_count)
            except (CodecError, UnsupportedVersion) as exc:
                logger.warning("ignoring anomaly checkpoint %s: %s", self.checkpoint_path, exc)
        states = self.store.load_sequence_state()
        self.ingest.restore_sequences(states)
        logger.info("sequence accounting restored for %d streams", len(states))

    def __call__(self, batch: IngestBatch) -> None:
        with self.engine_lock:
            alerts = self.engine.observe_many(
                (s.device, s.name, s.time_ms, float(s.value)) for s in batch.samples)
            for device, name in {(s.device, s.name) for s in batch.samples}:
                self.metric_names.setdefault(device, set()).add(name)
        streams = {s.device for s in batch.samples} | {f"{d.device}/{d.camera}" for d in batch.detections}
        with self.write_lock:
            result = self.store.write_batch(WriteBatch(
                samples=batch.samples, detections=batch.detections, events=batch.events,
                births=batch.births, statuses=batch.statuses, anomalies=alerts,
                dead_letters=batch.dead_letters, sequence_state=self.ingest.sequence_snapshot(streams)))
        self.stored_samples += result.samples_new
        self._announce(alerts)
        if self._clock() - self._last_checkpoint >= self.checkpoint_interval:
            self.checkpoint()

    def record_alerts(self, alerts: list[Alert]) -> None:
        """Store and announce alerts found outside ingest (the periodic batch detector)."""
        if not alerts:
            return
        with self.write_lock:
            self.store.write_batch(WriteBatch(anomalies=alerts))
        self._announce(alerts)

    def metrics_by_device(self) -> dict[str, set[str]]:
        """A copy of the metric names seen per device."""
        with self.engine_lock:
            return {device: set(names) for device, names in self.metric_names.items()}

    def episode_open(self, device: str, metric: str) -> bool | None:
        """Whether the stream's anomaly episode is still open; None when its detector does not say."""
        with self.engine_lock:
            if metric not in self.metric_names.get(device, ()):
                return None  # not a stream this process has seen (or a multivariate "a+b")
            gate = getattr(self.engine.detector(device, metric), "gate", None)
            is_open = getattr(gate, "is_open", None)
        return is_open if isinstance(is_open, bool) else None

    def forecast(self, device: str, metric: str, ahead_s: float = 60.0) -> ForecastPoint | None:
        """The stream's forecast about ``ahead_s`` seconds ahead; None before its first samples."""
        with self.engine_lock:
            first = self.engine.forecast(device, metric, 2)
            if len(first) < 2:
                return None
            step_ms = max(first[1].time_ms - first[0].time_ms, 1)
            horizon = min(max(math.ceil(ahead_s * 1000 / step_ms), 1), MAX_FORECAST_STEPS)
            points = self.engine.forecast(device, metric, horizon)
        return points[-1] if points else None

    def _announce(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.alerts += 1
            # A multivariate alert names several metrics ("a+b"); '+' cannot go into a topic.
            level = "multivariate" if "+" in alert.metric else alert.metric
            try:
                self.session.publish(self.session.topics.anomaly(alert.device, level),
                                     json.dumps(alert.to_json_dict(), separators=(",", ":")), qos=1,
                                     content_type="application/json")
            except BusError as exc:  # stopping: the alert is stored, just not announced
                logger.warning("anomaly on %s/%s stored but not published: %s", alert.device,
                               alert.metric, exc)
            logger.warning("anomaly %s/%s: %s", alert.device, alert.metric, alert.explanation)
            for listener in self.alert_listeners:
                try:
                    listener(alert)
                except Exception:
                    logger.exception("alert listener %r failed on %s/%s", listener, alert.device,
                                     alert.metric)

    def checkpoint(self) -> None:
        """Write the anomaly engine's state atomically (write, fsync, rename)."""
        self._last_checkpoint = self._clock()
        tmp = self.checkpoint_path.with_suffix(".tmp")
        with self.engine_lock:
            data = self.engine.checkpoint()
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.checkpoint_path)
