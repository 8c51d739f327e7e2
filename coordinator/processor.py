"""What the coordinator does with each ingest batch: score, store, announce.

Per batch, in this order:

1. every new sample is scored by the anomaly engine (score before learn), on
   the ingest's decoder thread;
2. samples, detections, events, births, statuses, dead letters, the alerts and
   the touched streams' sequence accounting go to the store in ONE transaction,
   so after a crash the store and the accounting agree on what arrived;
3. only then are the alerts published, as JSON on
   ``{root}/_anomaly/{device}/{metric}``, and shown in the live view, and
   each touched device's stored acknowledgement (coordinator/stored_acks.py),
   which lets its agent drop the confirmed samples from its outbox.

Steps 2 and 3 run on a writer thread (``pipeline=True``, the default), so
the store's own work (SQLite runs without the GIL) overlaps the scoring of
the next batch; the hand-over queue is short, so a slow store holds up the
decoder (and the broker) rather than piling up batches in memory. Batches
that queued up while the writer was busy share one transaction (one commit),
each written as it would be alone. :meth:`FleetProcessor.flush` waits for
the writer (``Ingest.drain`` and ``Ingest.stop`` call it).

The anomaly engine's state is checkpointed to ``anomaly.ckpt`` in the data
directory every ``checkpoint_interval`` seconds and on stop, and restored at
start, so a restart neither forgets what normal looks like nor re-scores
redelivered samples (the restored sequence accounting drops those). Sharded
(``[cluster]``), the checkpoint is each owned device's detectors in the store
instead, where the next member to take a device finds them.

The engine is not thread-safe: every use of it goes through ``engine_lock``
(the live view reads forecasts from another thread). Store writes from other
threads (the periodic batch detector, retention) go through ``write_lock``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from broker.session import BusSession
from coordinator.anomaly.alert import Alert
from coordinator.anomaly.base import ForecastPoint
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.ingest import Ingest, IngestBatch
from coordinator.store.base import Store
from coordinator.store.records import WriteBatch
from coordinator.stored_acks import StoredAckPublisher
from schemas.errors import BusError, CodecError, StoreError, UnsupportedVersion
from schemas.metrics import cycle

__all__ = ["FleetProcessor"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "anomaly.ckpt"
#: Scored batches waiting for the writer thread at most; then the decoder waits.
WRITE_QUEUE = 2
#: Pauses between attempts while the store is unavailable: the first, and the longest.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
#: Queued batches written in one transaction at most (on a store with shared transactions).
WRITES_PER_TRANSACTION = 8
#: The longest forecast the live view asks for, in samples.
MAX_FORECAST_STEPS = 3600


class FleetProcessor:
    """The ingest sink that scores, stores and announces (see the module docstring)."""

    def __init__(self, session: BusSession, ingest: Ingest, store: Store, engine: AnomalyEngine, *,
                 data_dir: Path, on_alert: Callable[[Alert], None] | None = None,
                 checkpoint_interval: float = 60.0, pipeline: bool = True,
                 stored_acks: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
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
        #: Batches the writer thread failed to store (logged; their alerts are not published).
        self.write_errors = 0
        #: Attempts the writer repeated because the store was unavailable.
        self.write_retries = 0
        #: Since when (clock) the writer has been holding batches for an unavailable store; None when not.
        self.held_since: float | None = None
        self._stopping = threading.Event()
        self.pipeline = pipeline
        self._writes: queue.Queue[tuple[WriteBatch, list[Alert]] | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._unwritten = 0
        self._written = threading.Condition()
        self._writer: threading.Thread | None = None
        #: Publishes what is stored to each device after the commit (``stored_acks=False``: nothing).
        self.acks = StoredAckPublisher(session) if stored_acks else None
        #: This coordinator's ``[cluster]`` member name: the owner recorded with the detector states it keeps.
        self.cluster_member = ""

    def restore(self) -> None:
        """Load the anomaly checkpoint and the stored sequence accounting, if any.

        Sharded, neither comes from here: each device's accounting and detectors come from the store
        when this member takes it (:meth:`take_devices`), so devices another member took meanwhile are
        not carried along."""
        owned = self.ingest.owned()
        if owned is None and self.checkpoint_path.exists():
            try:
                with self.engine_lock:
                    self.engine.restore(self.checkpoint_path.read_bytes())
                logger.info("anomaly detectors restored: %d streams", self.engine.stream_count)
            except (CodecError, UnsupportedVersion) as exc:
                logger.warning("ignoring anomaly checkpoint %s: %s", self.checkpoint_path, exc)
        states = self.store.load_sequence_state()
        if owned is not None:  # sharded: a device's accounting is loaded when it is taken (take_devices)
            states = {k: v for k, v in states.items() if k.partition("/")[0] in owned}
        announced = {d.id: d.birth_epoch for d in self.store.devices() if d.birth_epoch is not None}
        forgotten = self.ingest.restore_sequences(states, announced)
        if forgotten:  # else the store's merge would bring their impossible epoch back (epochs move forward)
            self.store.forget_sequence_state(forgotten)
        if self.acks is not None:
            self.acks.restore(self.ingest.sequence_snapshot())
        logger.info("sequence accounting restored for %d streams", len(states))

    def take_devices(self, devices: set[str]) -> None:
        """Start taking these devices (sharded): their stored accounting and detectors, then their streams.

        The accounting comes from the store (where their previous owner
        committed it with their samples), so repeats are still told apart and
        the first acknowledgement covers what the previous owner stored. The
        anomaly detectors come from the store too (``detector_states``: kept by
        the previous owner when it released the device, and at each of its
        checkpoints), so they go on instead of warming up again; a device with
        none kept starts afresh.
        """
        states = {k: v for k, v in self.store.load_sequence_state().items() if k.partition("/")[0] in devices}
        try:
            kept = self.store.load_detector_states(sorted(devices))
        except StoreError as exc:
            logger.warning("detector states of %d devices not read (%s): they start afresh",
                           len(devices), exc)
            kept = {}
        with self.engine_lock:
            restored = self.engine.restore_devices(kept)
        if kept:
            logger.info("took %d devices: %d anomaly detectors of %d go on from the store", len(devices),
                        restored, len(kept))
        if self.acks is not None:
            self.acks.adopt(states)
        self.ingest.take_devices(devices, states)

    def release_devices(self, devices: set[str]) -> None:
        """Stop taking these devices (another coordinator owns them): their streams and accounting; their
        detectors are kept in the store for the next owner, then forgotten here."""
        self.ingest.drop_devices(devices)
        with self.engine_lock:
            blobs = self.engine.checkpoint_devices(devices)
            for device in devices:
                self.engine.forget(device)
        self._keep_detector_states(blobs)

    def _keep_detector_states(self, blobs: dict[str, bytes]) -> None:
        try:
            self.store.save_detector_states(blobs, self.cluster_member, time.time_ns() // 1_000_000)
        except StoreError as exc:  # the next owner's detectors then start afresh: not worth stopping for
            logger.warning("detector states of %d devices not kept (%s)", len(blobs), exc)

    def __call__(self, batch: IngestBatch) -> None:
        runs = batch.metric_runs
        with self.engine_lock:
            for birth in batch.births:  # [[anomaly.overrides]] may pick settings by device group
                self.engine.set_device_groups(birth.device, birth.groups)
            alerts = self.engine.observe_columns(runs)
            for run in runs:
                names = run.names
                seen = self.metric_names.setdefault(run.device, set())
                index = run.name_index
                if len(names) == 1 or (len(index) >= len(names) and index == cycle(len(names), len(index))):
                    seen.update(names)  # every name of the table is in use
                else:
                    seen.update(map(names.__getitem__, set(index)))
        streams = ({run.device for run in runs} | {f"{d.device}/{d.camera}" for d in batch.detections}
                   | batch.streams)
        write = WriteBatch(sample_columns=runs, detections=batch.detections, events=batch.events,
                           births=batch.births, statuses=batch.statuses, anomalies=alerts,
                           dead_letters=batch.dead_letters,
                           sequence_state=self.ingest.sequence_snapshot(streams))
        if self.pipeline:
            self._hand_over(write, alerts)
        else:
            self._write([(write, alerts)])
        if self._clock() - self._last_checkpoint >= self.checkpoint_interval:
            self.checkpoint()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every batch handed over so far is stored and its alerts published."""
        with self._written:
            return self._written.wait_for(lambda: self._unwritten == 0, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the writer thread (a later batch starts it again)."""
        writer = self._writer
        if writer is None:
            return
        self._stopping.set()  # a writer waiting for an unavailable store gives up
        self._writes.put(None)
        writer.join(timeout)
        self._writer = None

    def _hand_over(self, write: WriteBatch, alerts: list[Alert]) -> None:
        with self._written:
            self._unwritten += 1
        if self._writer is None or not self._writer.is_alive():
            self._stopping.clear()
            self._writer = threading.Thread(target=self._write_loop, name="edgebus-store-writer", daemon=True)
            self._writer.start()
        self._writes.put((write, alerts))

    def _write_loop(self) -> None:
        acks = self.acks
        while True:
            try:
                item = self._writes.get(timeout=acks.interval if acks is not None and acks.pending else None)
            except queue.Empty:
                if acks is not None:
                    acks.publish_due()
                continue
            if item is None:
                if acks is not None:
                    acks.publish_due(force=True)
                return
            items = [item]
            stop = False
            most = WRITES_PER_TRANSACTION if getattr(self.store, "shared_transactions", False) else 1
            while len(items) < most:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            try:
                self._write(items)
            except Exception:  # the writer must outlive any one batch
                self.write_errors += 1
                logger.exception("store writer failed on %d batches", len(items))
            finally:
                with self._written:
                    self._unwritten -= len(items)
                    self._written.notify_all()
            if stop:
                if acks is not None:
                    acks.publish_due(force=True)
                return

    def _write(self, items: Sequence[tuple[WriteBatch, list[Alert]]]) -> None:
        """Store ``items`` in one transaction, then publish their alerts in order.

        While the store is unavailable (locked, unreachable, out of space) the
        writer waits and tries again, with growing pauses: the queues behind it
        fill and ingest holds the network thread, so the broker keeps what is
        not read yet and nothing is lost. Any other failure is the batch's own:
        each is then tried alone, so one bad batch costs only itself.
        """
        delay = RETRY_FIRST_S
        while True:
            try:
                with self.write_lock:
                    results = self.store.write_batches([write for write, _ in items])
                break
            except StoreError as exc:
                if not (exc.transient and self.pipeline) or self._stopping.is_set():
                    self._write_failed(items, exc)
                    return
                self.write_retries += 1
                if self.held_since is None:
                    self.held_since = self._clock()
                logger.warning("store unavailable, holding %d batches and trying again in %.1f s: %s",
                               len(items), delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:
                self._write_failed(items, exc)
                return
        self.held_since = None
        for result, (write, alerts) in zip(results, items, strict=True):
            self.stored_samples += result.samples_new
            self._announce(alerts)
            # What the store holds beyond this snapshot was committed by the other end of a move.
            gained = {stream: stored for stream, stored in result.sequence_state.items()
                      if (mine := write.sequence_state.get(stream)) is None
                      or (stored.epoch, stored.ranges) != (mine.epoch, mine.ranges)}
            if gained:
                self.ingest.absorb_sequences(gained)
        if self.acks is not None:
            for result, (write, _) in zip(results, items, strict=True):  # in order: a later one supersedes
                self.acks.committed(result.sequence_state or write.sequence_state)
            self.acks.publish_due(force=not self.pipeline)

    def _write_failed(self, items: Sequence[tuple[WriteBatch, list[Alert]]], exc: Exception) -> None:
        if len(items) > 1:
            for item in items:
                self._write([item])
            return
        if self.acks is not None:
            self.acks.block(items[0][0].sequence_state)
        if not self.pipeline:
            raise exc  # the ingest counts and logs a failing sink
        self.write_errors += 1
        logger.error("storing a batch of %d samples failed; its %d alerts are not published",
                     sum(len(c.times) for c in items[0][0].sample_columns), len(items[0][1]), exc_info=exc)

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
        """Write the anomaly engine's state atomically (write, fsync, rename).

        Waits for the writer first, so the checkpoint never knows samples the store does not.
        """
        self._last_checkpoint = self._clock()
        self.flush()
        owned = self.ingest.owned()
        if owned is not None:  # sharded: the store is the checkpoint, for the next member to take a device
            with self.engine_lock:
                blobs = self.engine.checkpoint_devices(owned)
            if blobs:
                self._keep_detector_states(blobs)
            return
        tmp = self.checkpoint_path.with_suffix(".tmp")
        with self.engine_lock:
            data = self.engine.checkpoint()
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.checkpoint_path)
