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
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from broker.session import BusSession
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.ingest import Ingest, IngestBatch
from coordinator.store.base import Store
from coordinator.store.records import WriteBatch
from schemas.errors import BusError, CodecError, UnsupportedVersion

__all__ = ["FleetProcessor"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "anomaly.ckpt"


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
        self.on_alert = on_alert
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
                self.engine.restore(self.checkpoint_path.read_bytes())
                logger.info("anomaly detectors restored: %d streams", self.engine.stream_count)
            except (CodecError, UnsupportedVersion) as exc:
                logger.warning("ignoring anomaly checkpoint %s: %s", self.checkpoint_path, exc)
        states = self.store.load_sequence_state()
        self.ingest.restore_sequences(states)
        logger.info("sequence accounting restored for %d streams", len(states))

    def __call__(self, batch: IngestBatch) -> None:
        alerts = self.engine.observe_many(
            (s.device, s.name, s.time_ms, float(s.value)) for s in batch.samples)
        streams = {s.device for s in batch.samples} | {f"{d.device}/{d.camera}" for d in batch.detections}
        result = self.store.write_batch(WriteBatch(
            samples=batch.samples, detections=batch.detections, events=batch.events,
            births=batch.births, statuses=batch.statuses, anomalies=alerts,
            dead_letters=batch.dead_letters, sequence_state=self.ingest.sequence_snapshot(streams)))
        self.stored_samples += result.samples_new
        for alert in alerts:
            self.alerts += 1
            try:
                self.session.publish(self.session.topics.anomaly(alert.device, alert.metric),
                                     json.dumps(alert.to_json_dict(), separators=(",", ":")), qos=1,
                                     content_type="application/json")
            except BusError as exc:  # stopping: the alert is stored, just not announced
                logger.warning("anomaly on %s/%s stored but not published: %s", alert.device,
                               alert.metric, exc)
            logger.warning("anomaly %s/%s: %s", alert.device, alert.metric, alert.explanation)
            if self.on_alert is not None:
                self.on_alert(alert)
        if self._clock() - self._last_checkpoint >= self.checkpoint_interval:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the anomaly engine's state atomically (write, fsync, rename)."""
        self._last_checkpoint = self._clock()
        tmp = self.checkpoint_path.with_suffix(".tmp")
        data = self.engine.checkpoint()
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.checkpoint_path)
