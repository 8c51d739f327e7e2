"""What goes into the store and comes out of it: the rows of the fleet's streams.

Ingest decodes messages into these rows and hands them to the sinks; the store
writes them and its queries return them, so each kind of row has one
definition. Two inputs are structural (:class:`typing.Protocol`) because their
concrete types live elsewhere: an anomaly is the engine's
:class:`~coordinator.anomaly.alert.Alert`, and ingest's metric runs are
:class:`~schemas.metrics.MetricColumns`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.birth import Birth
from schemas.sequence import DeviceSequence

__all__ = [
    "AnomalyLike", "AnomalyRecord", "DeadLetterRecord", "DetectionRecord", "DeviceInfo", "EventRecord",
    "RetentionResult", "Rollup", "SampleColumnsLike", "SampleRecord", "StoredAnomaly", "StoredEvent",
    "WriteBatch", "WriteResult",
]


class SampleColumnsLike(Protocol):
    """Samples ``first_seq, first_seq + 1, ...`` of one device as columns (ingest's metric runs):
    sample ``i`` is metric ``names[name_index[i]]`` at ``times[i]`` with ``values[i]``."""

    @property
    def device(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def names(self) -> Sequence[str]: ...
    @property
    def name_index(self) -> Sequence[int]: ...
    @property
    def times(self) -> Sequence[int]: ...
    @property
    def values(self) -> Sequence[float]: ...


class AnomalyLike(Protocol):
    """Matches coordinator.anomaly.alert.Alert (severity and kind are str enums)."""

    @property
    def device(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def time_ms(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def value(self) -> float | None: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def expected_low(self) -> float | None: ...
    @property
    def expected_high(self) -> float | None: ...
    @property
    def explanation(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def calibrated(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One metric sample of a device: sequence number ``seq`` of epoch ``epoch``."""

    device: str
    epoch: int
    seq: int
    time_ms: int
    name: str
    value: float | int


@dataclass(frozen=True, slots=True)
class DetectionRecord:
    """One object a camera saw in one frame (box normalised to [0, 1])."""

    device: str
    camera: str
    epoch: int
    seq: int
    time_ms: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A track event as published (``event`` is the JSON object; see agents/camera/events.py)."""

    device: str
    camera: str
    received_ms: int
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    device: str
    metric: str
    time_ms: int
    score: float
    value: float | None = None
    threshold: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    explanation: str = ""
    severity: str = "warning"
    kind: str = "deviation"
    calibrated: float | None = None  # in [0, 1], the same scale on every stream (see Alert)


@dataclass(frozen=True, slots=True)
class StoredAnomaly:
    """An anomaly as stored: its row id (what an operator acknowledges) and who acknowledged it when."""

    id: int
    anomaly: AnomalyRecord
    acknowledged_ms: int | None = None
    acknowledged_by: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A track event as stored, with its row id (the API's cursor) and the time it names."""

    id: int
    device: str
    camera: str
    type: str
    track_id: int | None
    label: str | None
    time_ms: int
    received_ms: int
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message that could not be used, with the reason (``bad_topic``, ``malformed``, ...)."""

    received_ms: int
    topic: str
    reason: str
    error: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    first_seen_ms: int
    last_seen_ms: int
    last_status: str | None
    last_status_ms: int | None
    birth_epoch: int | None
    birth_ms: int | None
    agent_version: str | None


@dataclass(frozen=True, slots=True)
class Rollup:
    """Samples of one metric within one interval, summarised (see retention)."""

    device: str
    name: str
    interval_s: int
    bucket_ms: int
    count: int
    avg: float
    min: float
    max: float


@dataclass(slots=True)
class WriteBatch:
    """Everything one ingest pass stores, written in one transaction.

    Device rows are derived: every device named in the batch gets
    ``last_seen_ms = seen_ms`` (or, without it, the newest time in its rows);
    ``births`` update the device's birth fields and ``statuses``
    (device, ``online``/``offline``, ms) its last status, the newer one winning.
    ``sequence_state`` (stream -> accounting) is saved in the same transaction
    as the samples it accounts for, so the two cannot disagree after a crash.
    ``sample_columns`` are more samples, stored like ``samples`` (the ingest
    hot path hands them over as columns, without an object per sample).
    """

    samples: Sequence[SampleRecord] = field(default_factory=list)
    sample_columns: Sequence[SampleColumnsLike] = field(default_factory=list)
    detections: Sequence[DetectionRecord] = field(default_factory=list)
    events: Sequence[EventRecord] = field(default_factory=list)
    births: Sequence[Birth] = field(default_factory=list)
    statuses: Sequence[tuple[str, str, int]] = field(default_factory=list)
    anomalies: Sequence[AnomalyLike] = field(default_factory=list)
    dead_letters: Sequence[DeadLetterRecord] = field(default_factory=list)
    sequence_state: Mapping[str, DeviceSequence] = field(default_factory=dict)
    seen_ms: int | None = None

    def __bool__(self) -> bool:
        return bool(self.samples or self.sample_columns or self.detections or self.events or self.births
                    or self.statuses or self.anomalies or self.dead_letters or self.sequence_state)


@dataclass(slots=True)
class WriteResult:
    """Rows new vs already stored (a redelivery), per kind; anomalies and dead letters are always new."""

    samples_new: int = 0
    samples_duplicate: int = 0
    detections_new: int = 0
    detections_duplicate: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    births_new: int = 0
    births_duplicate: int = 0
    anomalies: int = 0
    dead_letters: int = 0
    devices: int = 0
    #: The accounting of the batch's streams as stored after it: its own merged with what other
    #: writers (the other end of a device's move) committed (coordinator/store/sql_write.py).
    sequence_state: dict[str, DeviceSequence] = field(default_factory=dict)

    @property
    def new(self) -> int:
        return (self.samples_new + self.detections_new + self.events_new + self.births_new
                + self.anomalies + self.dead_letters)

    @property
    def duplicates(self) -> int:
        return (self.samples_duplicate + self.detections_duplicate + self.events_duplicate
                + self.births_duplicate)


@dataclass(slots=True)
class RetentionResult:
    rollups_written: int = 0
    samples_deleted: int = 0
    rollups_deleted: int = 0
    detections_deleted: int = 0
    events_deleted: int = 0
    anomalies_deleted: int = 0
    dead_letters_deleted: int = 0
    audit_events_deleted: int = 0
    rolled_up_until_ms: int | None = None
