"""Ingest: the fleet's streams in, decoded and accounted for, handed to the sinks in batches.

The session's network thread only queues raw messages (a bounded queue: when
the decoder falls behind, the network thread waits, paho stops reading, and
the broker holds the rest: back-pressure rather than loss at QoS 1). One
decoder thread takes up to ``batch_messages`` at a time, decodes them, keeps
per-stream sequence accounting (metrics per device, detections per camera),
drops redelivered samples by sequence number, and passes one
:class:`IngestBatch` to each sink (the store, the anomaly engine, the live
view) in turn.

Anything that cannot be used becomes a :class:`DeadLetter` with a reason
(``bad_topic``, ``malformed``, ``unsupported_version``, ``wrong_type``,
``device_mismatch``, ``bad_json``): counted, handed to the sinks like any other
row, never fatal. A record whose device differs from the topic's is refused:
devices are told apart by the broker's ACL on topics, not by what they claim.

With ``shared_group`` set, the high-volume streams are subscribed as
``$share/{group}/...`` so several coordinators split them (Mosquitto, EMQX;
the embedded amqtt broker never delivers shared subscriptions).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.router import ReceivedMessage
from broker.session import BusSession
from schemas.errors import CodecError, TopicError, UnsupportedVersion
from schemas.messages import DEFAULT_CODEC, Birth, DetectionsBatch, MetricsBatch
from schemas.record_base import record_from_body
from schemas.sequence import DeviceSequence, SequenceTracker
from schemas.topics import ParsedTopic, TopicKind

__all__ = ["DeadLetter", "DetectionRow", "Ingest", "IngestBatch", "IngestStats", "SampleRow"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SampleRow:
    device: str
    epoch: int
    seq: int
    time_ms: int
    name: str
    value: float | int


@dataclass(frozen=True, slots=True)
class DetectionRow:
    device: str
    camera: str
    epoch: int
    seq: int
    time_ms: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]
    track_id: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    reason: str
    error: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class EventRow:
    device: str
    camera: str
    received_ms: int
    event: dict[str, Any]


@dataclass(slots=True)
class IngestBatch:
    """What one decoder pass produced; sinks read it, nobody changes it after hand-over."""

    samples: list[SampleRow] = field(default_factory=list)
    detections: list[DetectionRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    births: list[Birth] = field(default_factory=list)
    statuses: list[tuple[str, str, int]] = field(default_factory=list)  # device, status, ms
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0

    def __bool__(self) -> bool:
        return bool(self.samples or self.detections or self.events or self.births
                    or self.statuses or self.dead_letters or self.duplicates)


Sink = Callable[[IngestBatch], None]


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    batches: int = 0
    samples: int = 0
    detections: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    sink_errors: int = 0
    queue_depth: int = 0


class Ingest:
    """Subscribes a coordinator session to the fleet's streams and feeds the sinks."""

    def __init__(self, session: BusSession, sinks: Sequence[Sink] = (), *, shared_group: str | None = None,
                 queue_size: int = 20_000, batch_messages: int = 2_000, batch_wait: float = 0.05,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 sequences: SequenceTracker | None = None) -> None:
        self.session = session
        self.topics = session.topics
        self.sinks = list(sinks)
        self.shared_group = shared_group
        self.sequences = sequences or SequenceTracker()
        self._queue: queue.Queue[ReceivedMessage | None] = queue.Queue(maxsize=queue_size)
        self._batch_messages = batch_messages
        self._batch_wait = batch_wait
        self._clock_ms = clock_ms
        self._stats = IngestStats()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._seq_lock = threading.Lock()

    # -- subscriptions -------------------------------------------------

    def subscriptions(self) -> list[str]:
        t = self.topics
        heavy = [t.all_metrics(), t.all_detections(), t.all_events()]
        if self.shared_group:
            heavy = [f"$share/{self.shared_group}/{f}" for f in heavy]
        return [*heavy, t.all_births(), t.all_status()]

    def start(self) -> Ingest:
        """Start the decoder and subscribe (before or after the session starts)."""
        self._thread = threading.Thread(target=self._run, name="edgebus-ingest", daemon=True)
        self._thread.start()
        for topic_filter in self.subscriptions():
            self.session.subscribe(topic_filter, self._enqueue, qos=1)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Decode and hand over what is queued, then stop the decoder."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every message queued so far went through the sinks (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def sequence_snapshot(self, streams: set[str] | None = None) -> dict[str, DeviceSequence]:
        """A consistent copy of the per-stream accounting (all, or just ``streams``)."""
        with self._seq_lock:
            return {k: DeviceSequence(v.epoch, [list(r) for r in v.ranges], v.received, v.duplicates,
                                      v.epochs_seen) for k, v in self.sequences.devices().items()
                    if streams is None or k in streams}

    def restore_sequences(self, states: dict[str, DeviceSequence]) -> None:
        """Continue the accounting a previous run stored (before :meth:`start`)."""
        with self._seq_lock:
            self.sequences = SequenceTracker.from_states(states)

    def stats(self) -> IngestStats:
        with self._stats_lock:
            snap = IngestStats(**{f: getattr(self._stats, f) for f in IngestStats.__slots__})
            snap.dead_letters = Counter(self._stats.dead_letters)
        snap.queue_depth = self._queue.qsize()
        return snap

    # -- network thread ------------------------------------------------

    def _enqueue(self, message: ReceivedMessage) -> None:
        with self._idle:
            self._pending += 1
        while not self._stopping.is_set():
            try:
                self._queue.put(message, timeout=0.5)
                return
            except queue.Full:
                logger.warning("ingest queue full (%d); holding the network thread",
                               self._queue.maxsize)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    # -- decoder thread ------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            messages = [first]
            deadline = time.monotonic() + self._batch_wait
            stop = False
            while len(messages) < self._batch_messages:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                messages.append(item)
            self._process(messages)
            if stop:
                break

    def _process(self, messages: list[ReceivedMessage]) -> None:
        batch = IngestBatch()
        for message in messages:
            self._decode_into(message, batch)
        with self._stats_lock:
            s = self._stats
            s.messages += len(messages)
            s.batches += 1
            s.samples += len(batch.samples)
            s.detections += len(batch.detections)
            s.duplicates += batch.duplicates
            for letter in batch.dead_letters:
                s.dead_letters[letter.reason] += 1
        for sink in self.sinks:
            try:
                sink(batch)
            except Exception:
                with self._stats_lock:
                    self._stats.sink_errors += 1
                logger.exception("ingest sink %r failed on a batch of %d messages", sink, len(messages))
        with self._idle:
            self._pending -= len(messages)
            self._idle.notify_all()

    def _dead(self, batch: IngestBatch, message: ReceivedMessage, reason: str, error: str) -> None:
        batch.dead_letters.append(DeadLetter(self._clock_ms(), message.topic, reason, error[:500],
                                             bytes(message.payload[:65536])))

    def _decode_into(self, message: ReceivedMessage, batch: IngestBatch) -> None:
        try:
            parsed = self.topics.parse(message.topic)
        except TopicError as exc:
            self._dead(batch, message, "bad_topic", str(exc))
            return
        device = parsed.device or ""
        if parsed.kind is TopicKind.STATUS:
            batch.statuses.append((device, bytes(message.payload).decode("utf-8", "replace")[:32],
                                   self._clock_ms()))
            return
        if parsed.kind is TopicKind.EVENTS:
            self._event(parsed, message, batch)
            return
        if not message.payload and parsed.kind is TopicKind.BIRTH:
            return  # a cleared retained birth
        try:
            record = record_from_body(DEFAULT_CODEC.decode(message.payload))
        except UnsupportedVersion as exc:
            self._dead(batch, message, "unsupported_version", str(exc))
            return
        except CodecError as exc:
            self._dead(batch, message, "malformed", str(exc))
            return
        expected = {TopicKind.METRICS: MetricsBatch, TopicKind.DETECTIONS: DetectionsBatch,
                    TopicKind.BIRTH: Birth}.get(parsed.kind)
        if expected is None or not isinstance(record, expected):
            self._dead(batch, message, "wrong_type",
                       f"a {type(record).__name__} record on a {parsed.kind.value} topic")
            return
        if getattr(record, "device", None) != device:
            self._dead(batch, message, "device_mismatch",
                       f"record claims device {getattr(record, 'device', None)!r} on {device!r}'s topic")
            return
        if isinstance(record, MetricsBatch):
            self._metrics(record, batch)
        elif isinstance(record, DetectionsBatch):
            if record.camera != parsed.name:
                self._dead(batch, message, "device_mismatch",
                           f"record claims camera {record.camera!r} on camera {parsed.name!r}'s topic")
                return
            self._detections(record, batch)
        else:
            assert isinstance(record, Birth)
            batch.births.append(record)

    def _metrics(self, record: MetricsBatch, batch: IngestBatch) -> None:
        n = len(record.samples)
        with self._seq_lock:
            fresh = self.sequences.fresh(record.device, epoch=record.epoch, first_seq=record.first_seq,
                                         count=n)
            self.sequences.observe(record.device, epoch=record.epoch, first_seq=record.first_seq, count=n)
        for i, (sample, new) in enumerate(zip(record.samples, fresh, strict=True)):
            if new:
                batch.samples.append(SampleRow(record.device, record.epoch, record.first_seq + i,
                                               sample.time_ms, sample.name, sample.value))
            else:
                batch.duplicates += 1

    def _detections(self, record: DetectionsBatch, batch: IngestBatch) -> None:
        stream = f"{record.device}/{record.camera}"
        n = len(record.frames)
        with self._seq_lock:
            fresh = self.sequences.fresh(stream, epoch=record.epoch, first_seq=record.first_seq, count=n)
            self.sequences.observe(stream, epoch=record.epoch, first_seq=record.first_seq, count=n)
        for i, (frame, new) in enumerate(zip(record.frames, fresh, strict=True)):
            if not new:
                batch.duplicates += 1
                continue
            for d in frame.detections:
                batch.detections.append(DetectionRow(
                    record.device, record.camera, record.epoch, record.first_seq + i, frame.time_ms,
                    d.label, d.confidence, d.box, d.track_id))

    def _event(self, parsed: ParsedTopic, message: ReceivedMessage, batch: IngestBatch) -> None:
        try:
            event = json.loads(message.payload)
        except ValueError as exc:
            self._dead(batch, message, "bad_json", str(exc))
            return
        if not isinstance(event, dict):
            self._dead(batch, message, "bad_json", "an event is a JSON object")
            return
        batch.events.append(EventRow(parsed.device or "", parsed.name or "", self._clock_ms(), event))
