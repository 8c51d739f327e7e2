"""Ingest: the fleet's streams in, decoded and accounted for, handed to the sinks in batches.

The session's network thread only queues raw messages (a bounded queue: when
the decoder falls behind, the network thread waits, paho stops reading, and
the broker holds the rest: back-pressure rather than loss at QoS 1). One
decoder thread takes up to ``batch_messages`` at a time, decodes them, keeps
per-stream sequence accounting (metrics per device, detections per camera),
drops redelivered samples by sequence number, and passes one
:class:`IngestBatch` to each sink (the store, the anomaly engine, the live
view) in turn.

Anything that cannot be used becomes a :class:`DeadLetterRecord` with a reason
(``bad_topic``, ``malformed``, ``unsupported_version``, ``wrong_type``,
``device_mismatch``, ``bad_json``): counted, handed to the sinks like any other
row, never fatal. A record whose device (or camera) differs from the topic's is
refused: devices are told apart by the broker's ACL on topics, not by what they claim.

What a device claims is bounded too, by the ``[ingest]`` limits
(:mod:`coordinator.ingest_limits`), each refusal a dead letter with its own
reason: the decoded size (``too_large``), samples, detections and names per
message (``too_many_samples``, ``too_many_detections``, ``too_many_names``,
``long_name``), names and camera streams per device (``too_many_names``,
``too_many_cameras``), the devices kept (``too_many_devices``), sample times
(``time_span``, ``future_time``), the sequence accounting (``implausible_epoch``,
``unannounced_epoch``, ``epoch_regress``, ``seq_jump``: see
:mod:`schemas.sequence`; an epoch moves only to one a birth announced, so no
single message can blind the coordinator to a device), and each device's rate
(``rate_limited``: checked before decoding; the device is flagged in
:meth:`Ingest.stats` and logged, the others are not slowed). A device the
fleet decision log quarantined (:mod:`coordinator.fleet_decisions`) is refused
as ``quarantined``, before anything else.

With ``sharded=True`` (``[cluster]``, coordinator/cluster/) the high-volume
streams are subscribed per device, only for the devices this coordinator
owns (:meth:`Ingest.take_devices`, :meth:`Ingest.drop_devices`); a metrics,
detections or events message of any other device is dropped unread (a
``not_owned`` count), not stored and so not acknowledged: its agent sends it
again to the owner. Births and statuses stay fleet-wide. With
``shared_group`` set, the high-volume streams are subscribed as
``$share/{group}/...`` instead: the broker hands each message to any member,
so per-device accounting is split (kept for compatibility; see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from broker.router import ReceivedMessage, Route
from broker.session import BusSession
from coordinator.batch_queue import BatchQueue
from coordinator.device_rates import DeviceRates
from coordinator.ingest_limits import IngestLimits
from coordinator.store.records import DeadLetterRecord, DetectionRecord, EventRecord, SampleRecord
from schemas.errors import CodecError, PayloadTooLarge, TopicError, UnsupportedVersion
from schemas.messages import Birth, DetectionsBatch, MetricsBatch
from schemas.metrics import MetricColumns
from schemas.record_base import record_from_body
from schemas.sequence import DeviceSequence, Refusal, SequenceTracker
from schemas.topics import ParsedTopic, TopicKind

__all__ = ["Ingest", "IngestBatch", "IngestStats"]

# A batch is handed to the decoder after batch_wait, or sooner once no message came for this long.
BATCH_IDLE = 0.02
# Parsed topics remembered (a fleet's topics are a bounded set); forgotten all at once beyond this.
PARSED_TOPICS = 10_000

logger = logging.getLogger(__name__)

#: The streams a sharded ingest takes only from the devices it owns.
_STREAMS = frozenset({TopicKind.METRICS, TopicKind.DETECTIONS, TopicKind.EVENTS})


class IngestBatch:
    """What one decoder pass produced; sinks read it, nobody changes it after hand-over.

    New metric samples are held as columns, ``metric_runs``: one
    :class:`~schemas.metrics.MetricColumns` per run of consecutive new samples
    of a metrics batch, so the processor scores and stores them without an
    object per sample (most of the decoder's cost at 100k samples/s).
    ``samples`` builds the :class:`SampleRecord` list from them on first use, for
    sinks that want one object per sample. A batch built with ``samples=`` gets
    its runs from those rows.
    """

    __slots__ = ("_samples", "births", "dead_letters", "detections", "duplicates", "events", "metric_runs",
                 "statuses", "streams")

    def __init__(self, samples: Sequence[SampleRecord] | None = None,
                 detections: list[DetectionRecord] | None = None, events: list[EventRecord] | None = None,
                 births: list[Birth] | None = None, statuses: list[tuple[str, str, int]] | None = None,
                 dead_letters: list[DeadLetterRecord] | None = None, duplicates: int = 0,
                 metric_runs: list[MetricColumns] | None = None) -> None:
        self.metric_runs: list[MetricColumns] = metric_runs if metric_runs is not None else []
        self._samples: list[SampleRecord] | None = None
        if samples:
            self._samples = list(samples) if not self.metric_runs else None  # else rebuilt from all runs
            self.metric_runs += [_row_columns(row) for row in samples]
        self.detections: list[DetectionRecord] = detections if detections is not None else []
        self.events: list[EventRecord] = events if events is not None else []
        self.births: list[Birth] = births if births is not None else []
        #: (device, status, ms)
        self.statuses: list[tuple[str, str, int]] = statuses if statuses is not None else []
        self.dead_letters: list[DeadLetterRecord] = dead_letters if dead_letters is not None else []
        self.duplicates = duplicates
        #: Every stream whose accounting took a batch, new samples or only repeats (the stored ack's).
        self.streams: set[str] = set()

    @property
    def samples(self) -> list[SampleRecord]:
        """Every new metric sample as a row, in arrival order (built once, on first use)."""
        if self._samples is None:
            self._samples = [SampleRecord(run.device, run.epoch, seq, time_ms, run.names[k], value)
                             for run in self.metric_runs
                             for seq, time_ms, k, value in zip(
                                 range(run.first_seq, run.first_seq + len(run.times)), run.times,
                                 run.name_index, run.wire_values or run.values, strict=True)]
        return self._samples

    @property
    def sample_count(self) -> int:
        """How many new metric samples the batch holds (without building the rows)."""
        return sum(len(run.times) for run in self.metric_runs)

    def __bool__(self) -> bool:
        return bool(self.metric_runs or self.detections or self.events or self.births
                    or self.statuses or self.dead_letters or self.duplicates)


def _row_columns(row: SampleRecord) -> MetricColumns:
    value = row.value
    return MetricColumns(row.device, row.epoch, row.seq, [row.name], [0], [row.time_ms], [float(value)],
                         None if type(value) is float else [value])


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
    #: Messages refused per device for its rate (rate_limited), since the start.
    throttled: Counter[str] = field(default_factory=Counter)
    #: Devices refused for their rate within the last minute.
    flagged: list[str] = field(default_factory=list)
    #: Stream messages of devices another coordinator owns (sharded: dropped unread, sent again by the agent).
    not_owned: int = 0


class Ingest:
    """Subscribes a coordinator session to the fleet's streams and feeds the sinks."""

    def __init__(self, session: BusSession, sinks: Sequence[Sink] = (), *, shared_group: str | None = None,
                 queue_size: int = 20_000, batch_messages: int = 2_000, batch_wait: float = 0.2,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 sequences: SequenceTracker | None = None, limits: IngestLimits | None = None,
                 rate_clock: Callable[[], float] = time.monotonic, sharded: bool = False) -> None:
        if sharded and shared_group:
            raise ValueError("an ingest is either sharded by device or on a shared subscription, not both")
        self.session = session
        self.limits = limits or IngestLimits()
        self._codec = self.limits.codec()
        self._seq_limits = self.limits.sequence()
        self._rates = DeviceRates(messages_per_s=self.limits.device_messages_per_s,
                                  samples_per_s=self.limits.device_samples_per_s,
                                  burst_s=self.limits.burst_s, max_devices=self.limits.max_devices)
        self._rate_clock = rate_clock
        #: Metric names and camera streams seen per device (bounded by the limits).
        self._device_names: dict[str, set[str]] = {}
        self._device_cameras: dict[str, set[str]] = {}
        self.topics = session.topics
        self.sinks = list(sinks)
        self.shared_group = shared_group
        self.sequences = sequences or SequenceTracker()
        self._queue: BatchQueue[ReceivedMessage] = BatchQueue(
            maxsize=queue_size, batch_items=batch_messages, window=batch_wait, idle=BATCH_IDLE)
        self._clock_ms = clock_ms
        self._stats = IngestStats()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._seq_lock = threading.Lock()
        self._parsed: dict[str, ParsedTopic] = {}
        #: Devices a fleet decision quarantined (coordinator/fleet_decisions.py): their messages are refused
        #: as ``quarantined`` dead letters. Replaced whole (one assignment), never mutated in place.
        self.quarantined: frozenset[str] = frozenset()
        #: The devices whose streams this ingest takes (sharded); None: every device.
        self._owned: frozenset[str] | None = frozenset() if sharded else None
        self._device_routes: dict[str, list[Route]] = {}
        self._own_lock = threading.Lock()

    # -- subscriptions -------------------------------------------------

    def subscriptions(self) -> list[str]:
        t = self.topics
        heavy = [t.all_metrics(), t.all_detections(), t.all_events()] if self._owned is None else []
        if self.shared_group:
            heavy = [f"$share/{self.shared_group}/{f}" for f in heavy]
        # Births first: the broker sends the retained ones as it handles each SUBSCRIBE, in order, so a
        # device's current epoch is announced before its first metrics can arrive.
        return [t.all_births(), t.all_status(), *heavy]

    def start(self) -> Ingest:
        """Start the decoder and subscribe (before or after the session starts)."""
        if self._queue.closed:  # started again after a stop
            q = self._queue
            self._queue = BatchQueue(maxsize=q.maxsize, batch_items=q.batch_items, window=q.window,
                                     idle=q.idle)
            self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="edgebus-ingest", daemon=True)
        self._thread.start()
        for topic_filter in self.subscriptions():
            self.session.subscribe(topic_filter, self._enqueue, qos=1)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Decode and hand over what is queued, then stop the decoder (and wait for the sinks)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.close()
        self._thread.join(timeout)
        self._thread = None
        self._flush_sinks(timeout)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every message queued so far went through the sinks (tests, shutdown).

        A sink that finishes its work on its own thread (the processor's store
        writer) has a ``flush(timeout)``; that is waited for too.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                return False
        return self._flush_sinks(max(deadline - time.monotonic(), 0.0))

    def _flush_sinks(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        done = True
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if callable(flush):
                done = bool(flush(max(deadline - time.monotonic(), 0.0))) and done
        return done

    # -- devices (sharded) ----------------------------------------------

    def owned(self) -> frozenset[str] | None:
        """The devices whose streams this ingest takes (sharded), or None: all."""
        return self._owned

    def take_devices(self, devices: set[str], states: dict[str, DeviceSequence]) -> None:
        """Take these devices' streams from now on, continuing the accounting ``states`` (from the store).

        The accounting first, then the subscriptions: no message of theirs is
        decoded against an older account this process may still hold.
        """
        if self._owned is None:
            raise ValueError("take_devices needs a sharded ingest")
        with self._own_lock:
            devices = devices - self._owned
            with self._seq_lock:
                self.sequences.replace({k: v for k, v in states.items() if k.partition("/")[0] in devices})
            self._owned = self._owned | devices
            t = self.topics
            for device in sorted(devices):
                self._device_routes[device] = [
                    self.session.subscribe(f, self._enqueue, qos=1)
                    for f in (t.metrics(device), t.device_detections(device), t.device_events(device))]

    def drop_devices(self, devices: set[str]) -> None:
        """Stop taking these devices' streams (another coordinator owns them) and forget their accounting."""
        if self._owned is None:
            raise ValueError("drop_devices needs a sharded ingest")
        with self._own_lock:
            devices = devices & self._owned
            self._owned = self._owned - devices
            for device in devices:
                for route in self._device_routes.pop(device, []):
                    self.session.unsubscribe(route)
            with self._seq_lock:
                self.sequences.forget([k for k in self.sequences.devices() if k.partition("/")[0] in devices])

    def sequence_snapshot(self, streams: set[str] | None = None) -> dict[str, DeviceSequence]:
        """A consistent copy of the per-stream accounting (all, or just ``streams``)."""
        with self._seq_lock:
            return {k: DeviceSequence(v.epoch, [list(r) for r in v.ranges], v.received, v.duplicates,
                                      v.epochs_seen) for k, v in self.sequences.devices().items()
                    if streams is None or k in streams}

    def absorb_sequences(self, states: dict[str, DeviceSequence]) -> None:
        """Merge the stored accounting of streams into this one (another coordinator committed more of them).

        The other end of a device's move may commit its last batches after this
        coordinator read the device's account: they are stored, so not missing.
        Streams no longer taken here are left out.
        """
        with self._seq_lock:
            self.sequences.absorb(states)

    def restore_sequences(self, states: dict[str, DeviceSequence],
                          announced: dict[str, int] | None = None) -> list[str]:
        """Continue the accounting a previous run stored (before :meth:`start`).

        ``announced``: the epoch of each device's latest stored birth. Streams
        and births with an epoch no device could have (an older version took
        any) are forgotten, so such a stream starts again with its device's next
        batch; returns those streams (the caller forgets their stored account too).
        """
        tracker = SequenceTracker.from_states(states)
        tracker.restore_announced(announced or {})
        dropped = tracker.discard_implausible(now_ms=self._clock_ms(), limits=self._seq_limits)
        with self._seq_lock:
            self.sequences = tracker
        if dropped:
            logger.warning("forgot the stored accounting of %d streams whose epoch is more than %d ms ahead "
                           "of this clock: %s", len(dropped), self._seq_limits.max_future_ms,
                           ", ".join(dropped[:20]))
        kept = tracker.devices()
        return sorted(stream for stream in states if stream not in kept)

    @property
    def queue_capacity(self) -> int:
        """Messages the queue holds before the network thread waits (back-pressure to the broker)."""
        return self._queue.maxsize

    def is_running(self) -> bool:
        """Whether the decoder thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> IngestStats:
        with self._stats_lock:
            snap = IngestStats(**{f: getattr(self._stats, f) for f in IngestStats.__slots__})
            snap.dead_letters = Counter(self._stats.dead_letters)
            snap.throttled = Counter(self._stats.throttled)
            snap.flagged = list(self._stats.flagged)
        snap.queue_depth = len(self._queue)
        return snap

    # -- network thread ------------------------------------------------

    def _enqueue(self, message: ReceivedMessage) -> None:
        with self._idle:
            self._pending += 1
        while not self._stopping.is_set():
            if self._queue.put(message, timeout=0.5):
                return
            if not self._stopping.is_set():
                logger.warning("ingest queue full (%d); holding the network thread", self._queue.maxsize)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    # -- decoder thread ------------------------------------------------

    def _run(self) -> None:
        while (messages := self._queue.get_batch()) is not None:
            self._process(messages)

    def _process(self, messages: list[ReceivedMessage]) -> None:
        batch = IngestBatch()
        # One reading of each clock per batch (a batch spans at most batch_wait).
        now_ms, now = self._clock_ms(), self._rate_clock()
        for message in messages:
            self._decode_into(message, batch, now_ms, now)
        for device in self._rates.take_newly_flagged():
            logger.warning("device %s sends faster than [ingest] allows (%g messages/s, %g samples/s, "
                           "bursts of %g s): its messages are refused as rate_limited", device,
                           self.limits.device_messages_per_s, self.limits.device_samples_per_s,
                           self.limits.burst_s)
        with self._stats_lock:
            s = self._stats
            s.messages += len(messages)
            s.batches += 1
            s.samples += batch.sample_count
            s.detections += len(batch.detections)
            s.duplicates += batch.duplicates
            for letter in batch.dead_letters:
                s.dead_letters[letter.reason] += 1
            if self._rates.refused:
                s.throttled = Counter(self._rates.refused)
                s.flagged = self._rates.flagged(now)
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
        """A dead letter keeps the first ``dead_letter_payload_bytes`` of the payload; a longer one's
        length and SHA-256 go into its error text, so a flood of large refusals cannot fill the store."""
        payload = message.payload
        keep = self.limits.dead_letter_payload_bytes
        error = error[:500]
        if len(payload) > keep:
            error += (f" [payload {len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}, "
                      f"first {keep} kept]")
        batch.dead_letters.append(DeadLetterRecord(self._clock_ms(), message.topic, reason, error,
                                                   bytes(payload[:keep])))

    def _decode_into(self, message: ReceivedMessage, batch: IngestBatch, now_ms: int, now: float) -> None:
        parsed = self._parsed.get(message.topic)
        if parsed is None:
            try:
                parsed = self.topics.parse(message.topic)
            except TopicError as exc:
                self._dead(batch, message, "bad_topic", str(exc))
                return
            if len(self._parsed) >= PARSED_TOPICS:
                self._parsed.clear()
            self._parsed[message.topic] = parsed
        device = parsed.device or ""
        if device in self.quarantined:
            self._dead(batch, message, "quarantined", f"device {device!r} is quarantined by a fleet decision")
            return
        owned = self._owned
        if owned is not None and device not in owned and parsed.kind in _STREAMS:
            with self._stats_lock:
                self._stats.not_owned += 1
            return
        refused = self._rates.admit(device, now)  # before any decoding: a flood costs a look-up
        if refused is not None:
            self._dead(batch, message, refused, f"device {device!r}: {self._refusal_text(refused)}")
            return
        if parsed.kind is TopicKind.STATUS:
            batch.statuses.append((device, bytes(message.payload[:128]).decode("utf-8", "replace")[:32],
                                   now_ms))
            return
        if parsed.kind is TopicKind.EVENTS:
            self._event(parsed, message, batch)
            return
        if not message.payload and parsed.kind is TopicKind.BIRTH:
            return  # a cleared retained birth
        try:
            body = self._codec.decode(message.payload)
            if parsed.kind is TopicKind.METRICS:
                # The usual case, without an object per sample (its limits are checked on the columns);
                # anything else goes the record way, after a look at its sizes.
                columns = MetricColumns.from_body(body)
                if columns is not None:
                    if columns.device != device:
                        self._dead(batch, message, "device_mismatch",
                                   f"record claims device {columns.device!r} on {device!r}'s topic")
                    else:
                        self._metric_columns(columns, batch, message, now_ms, now)
                    return
                refusal = self._metrics_body_budget(body)
                if refusal is not None:
                    self._dead(batch, message, refusal.reason, refusal.detail)
                    return
            elif parsed.kind is TopicKind.DETECTIONS:
                refusal = self._detections_body_budget(body)
                if refusal is not None:
                    self._dead(batch, message, refusal.reason, refusal.detail)
                    return
            record = record_from_body(body)
        except PayloadTooLarge as exc:
            self._dead(batch, message, "too_large", str(exc))
            return
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
            self._metrics(record, batch, message, now_ms, now)
        elif isinstance(record, DetectionsBatch):
            if record.camera != parsed.name:
                self._dead(batch, message, "device_mismatch",
                           f"record claims camera {record.camera!r} on camera {parsed.name!r}'s topic")
                return
            self._detections(record, batch, message, now_ms, now)
        else:
            assert isinstance(record, Birth)
            with self._seq_lock:
                refusal = self.sequences.announce(device, record.epoch, now_ms=now_ms,
                                                  limits=self._seq_limits)
            if refusal is not None:
                self._dead(batch, message, refusal.reason, refusal.detail)
                return
            batch.births.append(record)

    def _refusal_text(self, reason: str) -> str:
        limits = self.limits
        if reason == "rate_limited":
            return (f"over {limits.device_messages_per_s:g} messages/s or {limits.device_samples_per_s:g} "
                    f"samples/s (bursts of {limits.burst_s:g} s)")
        return f"the coordinator keeps state for {limits.max_devices} devices at most (max_devices)"

    # -- budgets -------------------------------------------------------

    def _metrics_body_budget(self, body: object) -> Refusal | None:
        """Sample and name counts of a metrics body, checked before any per-sample work."""
        if type(body) is not dict:
            return None
        limits = self.limits
        index, names = body.get("idx"), body.get("names")
        if type(index) is list and len(index) > limits.max_samples:
            return Refusal("too_many_samples", f"{len(index)} samples in one message; the limit is "
                                               f"{limits.max_samples} (max_samples)")
        if type(names) is list and len(names) > limits.max_names:
            return Refusal("too_many_names", f"{len(names)} metric names in one message; the limit is "
                                             f"{limits.max_names} (max_names)")
        return None

    def _detections_body_budget(self, body: object) -> Refusal | None:
        if type(body) is not dict:
            return None
        limits = self.limits
        frames, labels = body.get("dt"), body.get("label")
        if type(frames) is list and len(frames) > limits.max_samples:
            return Refusal("too_many_samples", f"{len(frames)} frames in one message; the limit is "
                                               f"{limits.max_samples} (max_samples)")
        if type(labels) is list and len(labels) > limits.max_detections:
            return Refusal("too_many_detections", f"{len(labels)} detections in one message; the limit is "
                                                  f"{limits.max_detections} (max_detections)")
        return None

    def _times_refusal(self, times: Sequence[int], now_ms: int,
                       known: tuple[int, int] | None = None) -> Refusal | None:
        """Why the times of one message are not taken (``known``: their earliest and latest), or None."""
        if not times:
            return None
        limits = self.limits
        low, high = known or (min(times), max(times))
        if high - low > limits.max_time_span_ms:
            return Refusal("time_span", f"sample times span {high - low} ms in one message; the limit is "
                                        f"{limits.max_time_span_ms} ms (max_time_span_ms)")
        if high > now_ms + limits.max_future_ms:
            return Refusal("future_time", f"a sample time {high} is more than {limits.max_future_ms} ms "
                                          f"ahead of this coordinator's clock ({now_ms}) (max_future_ms)")
        return None

    def _names_refusal(self, device: str, names: Sequence[str]) -> set[str] | Refusal | None:
        """None if every name is known for ``device``; else its grown name set, or why not."""
        known = self._device_names.get(device)
        if known is not None and known.issuperset(names):
            return None
        limits = self.limits
        grown = set(names) if known is None else known.union(names)
        if len(grown) > limits.max_device_names:
            return Refusal("too_many_names", f"device would have {len(grown)} metric names; the limit is "
                                             f"{limits.max_device_names} (max_device_names)")
        longest = max(map(len, names), default=0)
        if longest > limits.max_name_chars:
            return Refusal("long_name", f"a metric name of {longest} characters; the limit is "
                                        f"{limits.max_name_chars} (max_name_chars)")
        return grown

    def _camera_refusal(self, device: str, camera: str) -> Refusal | None:
        cameras = self._device_cameras.setdefault(device, set())
        if camera in cameras:
            return None
        if len(cameras) >= self.limits.max_device_cameras:
            return Refusal("too_many_cameras", f"device has {len(cameras)} camera streams; the limit is "
                                               f"{self.limits.max_device_cameras} (max_device_cameras)")
        cameras.add(camera)
        return None

    # -- accounting ----------------------------------------------------

    def _metrics(self, record: MetricsBatch, batch: IngestBatch, message: ReceivedMessage, now_ms: int,
                 now: float) -> None:
        samples = record.samples
        names: dict[str, int] = {}
        index = [names.setdefault(s.name, len(names)) for s in samples]
        wire = [s.value for s in samples]
        values = [float(v) for v in wire]
        self._metric_columns(MetricColumns(
            record.device, record.epoch, record.first_seq, list(names), index, [s.time_ms for s in samples],
            values, None if all(type(v) is float for v in wire) else wire), batch, message, now_ms, now)

    def _metric_columns(self, columns: MetricColumns, batch: IngestBatch, message: ReceivedMessage,
                        now_ms: int, now: float) -> None:
        """Check a metrics batch against the budgets, account for it and keep its new samples."""
        n = len(columns.times)
        device, epoch, first_seq = columns.device, columns.epoch, columns.first_seq
        limits = self.limits
        refusal = self._times_refusal(columns.times, now_ms, columns.time_range)
        if n > limits.max_samples:  # the record path checked the body already; the column path checks here
            refusal = Refusal("too_many_samples", f"{n} samples in one message; the limit is "
                                                  f"{limits.max_samples} (max_samples)")
        elif len(columns.names) > limits.max_names:
            refusal = Refusal("too_many_names", f"{len(columns.names)} metric names in one message; the "
                                                f"limit is {limits.max_names} (max_names)")
        names = self._names_refusal(device, columns.names) if refusal is None else None
        if isinstance(names, Refusal):
            refusal = names
        if refusal is None and not self._rates.take_samples(device, n, now):
            refusal = Refusal("rate_limited", f"device {device!r}: {self._refusal_text('rate_limited')}")
        if refusal is None:
            with self._seq_lock:
                taken = self.sequences.take(device, device, epoch, first_seq, n, now_ms, self._seq_limits)
            if isinstance(taken, Refusal):
                refusal = taken
            else:
                fresh = taken
        if refusal is not None:
            self._dead(batch, message, refusal.reason, refusal.detail)
            return
        batch.streams.add(device)
        if isinstance(names, set):
            self._device_names[device] = names
        new = fresh.count(True)
        batch.duplicates += n - new
        if new == n:
            if n:
                batch.metric_runs.append(columns)
            return
        start: int | None = None
        for i, is_new in enumerate([*fresh, False]):
            if is_new and start is None:
                start = i
            elif not is_new and start is not None:
                batch.metric_runs.append(columns.slice(start, i))
                start = None

    def _detections(self, record: DetectionsBatch, batch: IngestBatch, message: ReceivedMessage, now_ms: int,
                    now: float) -> None:
        stream = f"{record.device}/{record.camera}"
        n = len(record.frames)
        refusal = (self._camera_refusal(record.device, record.camera)
                   or self._times_refusal([frame.time_ms for frame in record.frames], now_ms))
        if refusal is None and not self._rates.take_samples(record.device, n, now):
            refusal = Refusal("rate_limited",
                              f"device {record.device!r}: {self._refusal_text('rate_limited')}")
        if refusal is None:
            with self._seq_lock:
                taken = self.sequences.take(stream, record.device, record.epoch, record.first_seq, n, now_ms,
                                            self._seq_limits)
            if isinstance(taken, Refusal):
                refusal = taken
            else:
                fresh = taken
        if refusal is not None:
            self._dead(batch, message, refusal.reason, refusal.detail)
            return
        batch.streams.add(stream)
        for i, (frame, new) in enumerate(zip(record.frames, fresh, strict=True)):
            if not new:
                batch.duplicates += 1
                continue
            for d in frame.detections:
                batch.detections.append(DetectionRecord(
                    record.device, record.camera, record.epoch, record.first_seq + i, frame.time_ms,
                    d.label, d.confidence, d.box, d.track_id))

    def _event(self, parsed: ParsedTopic, message: ReceivedMessage, batch: IngestBatch) -> None:
        if len(message.payload) > self.limits.max_payload_bytes:
            self._dead(batch, message, "too_large", f"event is {len(message.payload)} bytes; the limit is "
                                                    f"{self.limits.max_payload_bytes} (max_payload_bytes)")
            return
        try:
            event = json.loads(message.payload)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            self._dead(batch, message, "bad_json", str(exc) or type(exc).__name__)
            return
        if not isinstance(event, dict):
            self._dead(batch, message, "bad_json", "an event is a JSON object")
            return
        camera = parsed.name or ""
        if event.get("camera", camera) != camera:
            self._dead(batch, message, "device_mismatch",
                       f"event claims camera {str(event.get('camera'))[:64]!r} on camera {camera!r}'s topic")
            return
        refusal = self._camera_refusal(parsed.device or "", camera)
        if refusal is not None:
            self._dead(batch, message, refusal.reason, refusal.detail)
            return
        batch.events.append(EventRecord(parsed.device or "", camera, self._clock_ms(), event))
