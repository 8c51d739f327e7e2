"""The store interface and its plugin registry: ``[store] type = "..."`` picks the class.

A store type is a class in ``coordinator/store/plugins/`` that registers itself
with :func:`register_store` under its ``TYPE``; :func:`open_store` reads
``[store]``, looks the type up and lets the class parse the rest of the table
strictly. Only ``sql`` (SQLite or PostgreSQL through SQLAlchemy) ships.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from broker.config_values import section_table
from broker.plugin_registry import PluginRegistry
from coordinator.store.config import text
from coordinator.store.records import (
    AnomalyRecord,
    DeadLetterRecord,
    DetectionRecord,
    DeviceInfo,
    RetentionResult,
    Rollup,
    SampleRecord,
    StoredAnomaly,
    StoredEvent,
    WriteBatch,
    WriteResult,
)
from coordinator.store.series import Series
from schemas.audit import AuditRecord
from schemas.sequence import DeviceSequence

__all__ = ["DEFAULT_STORE_TYPE", "STORES", "Store", "open_store", "register_store", "store_types"]

DEFAULT_STORE_TYPE = "sql"


class Store(ABC):
    """Where the coordinator keeps what it ingested; one writer thread, any number of readers."""

    #: The ``[store] type`` value that selects this store.
    TYPE: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, section: Mapping[str, Any], *, data_dir: Path) -> Store:
        """Build from the ``[store]`` table (``type`` already checked); unknown keys are ConfigError."""

    @abstractmethod
    def migrate(self) -> None:
        """Bring the schema up to date; a no-op when it already is."""

    @abstractmethod
    def write_batch(self, batch: WriteBatch) -> WriteResult:
        """Store everything in ``batch`` in one transaction; redelivered rows are counted, not stored."""

    #: :meth:`write_batches` is one transaction (all or nothing), not one per batch.
    shared_transactions: ClassVar[bool] = False

    def write_batches(self, batches: Sequence[WriteBatch]) -> list[WriteResult]:
        """Write several batches, each as :meth:`write_batch` would; one transaction for all of
        them where :attr:`shared_transactions` says so, else one after another."""
        return [self.write_batch(batch) for batch in batches]

    @abstractmethod
    def count_samples(self, device: str | None = None) -> int: ...

    @abstractmethod
    def samples(self, device: str, name: str, since_ms: int | None = None,
                until_ms: int | None = None) -> list[SampleRecord]: ...

    @abstractmethod
    def rollups(self, device: str, name: str, since_ms: int | None = None,
                until_ms: int | None = None) -> list[Rollup]: ...

    @abstractmethod
    def detections(self, device: str, camera: str | None = None, since_ms: int | None = None,
                   until_ms: int | None = None) -> list[DetectionRecord]: ...

    @abstractmethod
    def events(self, device: str, camera: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    def births(self, device: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def devices(self) -> list[DeviceInfo]: ...

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetterRecord]: ...

    @abstractmethod
    def anomalies(self, device: str | None = None, metric: str | None = None, since_ms: int | None = None,
                  limit: int = 100) -> list[AnomalyRecord]: ...

    @abstractmethod
    def load_sequence_state(self) -> dict[str, DeviceSequence]: ...

    # -- what the HTTP API reads: pages (newest first, ``before`` the previous page's last key) ----

    @abstractmethod
    def series(self, device: str, name: str, since_ms: int | None = None,
               until_ms: int | None = None) -> Series:
        """Metric ``name`` of ``device`` in ``[since_ms, until_ms)`` as (times, values) arrays."""

    @abstractmethod
    def iter_samples(self, device: str, since_ms: int | None = None, until_ms: int | None = None,
                     metric: str | None = None) -> Iterator[SampleRecord]:
        """Every sample of ``device`` (of one metric, or all) in the range, an hour of blocks at a time,
        each hour's sorted by time: an export of any length without holding it in memory."""

    @abstractmethod
    def metric_names(self, device: str) -> list[str]:
        """The metric names in the device's newest stored samples (its last hour of them)."""

    @abstractmethod
    def detection_page(self, device: str, camera: str | None = None, since_ms: int | None = None,
                       until_ms: int | None = None, before: tuple[int, str, int, int, int] | None = None,
                       limit: int = 100) -> list[tuple[tuple[int, str, int, int, int], DetectionRecord]]:
        """Detections newest first, each with its key ``(time_ms, camera, epoch, seq, idx)``;
        ``before`` is a key: only detections after it in that order."""

    @abstractmethod
    def event_page(self, device: str | None = None, camera: str | None = None, since_ms: int | None = None,
                   until_ms: int | None = None, before_id: int | None = None,
                   limit: int = 100) -> list[StoredEvent]:
        """Track events newest first (by id, which grows as they are stored)."""

    @abstractmethod
    def track_end_event(self, device: str, camera: str, track_id: int,
                        time_ms: int | None = None) -> StoredEvent | None:
        """The end event of one track (the newest, or the one at ``time_ms``): its snapshot."""

    @abstractmethod
    def anomaly_page(self, device: str | None = None, metric: str | None = None, since_ms: int | None = None,
                     until_ms: int | None = None, acknowledged: bool | None = None,
                     before_id: int | None = None, limit: int = 100) -> list[StoredAnomaly]:
        """Anomalies newest first, with their ids and acknowledgement."""

    @abstractmethod
    def anomaly(self, anomaly_id: int) -> StoredAnomaly | None: ...

    @abstractmethod
    def acknowledge_anomaly(self, anomaly_id: int, by: str, now_ms: int) -> StoredAnomaly | None:
        """Mark one anomaly acknowledged (the first acknowledgement stays); None if there is no such id."""

    @abstractmethod
    def record_placement_decision(self, decision: Mapping[str, Any]) -> None:
        """Keep one decision of the load balancer (coordinator/placement/service.py's JSON object)."""

    @abstractmethod
    def placement_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest decisions, newest first."""

    @abstractmethod
    def record_audit(self, record: AuditRecord) -> bool:
        """Keep one audit record; False when one with its id is already stored (kept once)."""

    @abstractmethod
    def audit_events(self, limit: int = 100, kind: str | None = None,
                     subject: str | None = None) -> list[AuditRecord]:
        """The latest audit records, newest first, optionally of one kind or subject."""

    @abstractmethod
    def check_writable(self) -> None:
        """A small write in a transaction of its own; StoreError if the store cannot take one."""

    @abstractmethod
    def save_sequence_state(self, states: Mapping[str, DeviceSequence]) -> None:
        """Store these accounts as they are (:meth:`write_batch` merges its own into the stored ones)."""

    @abstractmethod
    def forget_sequence_state(self, streams: Sequence[str]) -> None:
        """Delete these streams' stored accounts (ones no device could have made)."""

    @abstractmethod
    def save_detector_states(self, states: Mapping[str, bytes], owner: str, time_ms: int) -> None:
        """Keep each device's anomaly detectors (a checkpoint blob) for the next coordinator that takes it."""

    @abstractmethod
    def load_detector_states(self, devices: Sequence[str]) -> dict[str, bytes]:
        """The kept detector blobs of these devices (those that have one)."""

    @abstractmethod
    def apply_retention(self, now_ms: int) -> RetentionResult: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The store types by ``[store] type``, found in coordinator/store/plugins/.
STORES: PluginRegistry[Store] = PluginRegistry("store", "coordinator.store.plugins",
                                               default=DEFAULT_STORE_TYPE)
#: Class decorator: make a store selectable as ``[store] type = cls.TYPE``.
register_store = STORES.register


def store_types() -> list[str]:
    """The registered store types, sorted."""
    return STORES.names()


def open_store(section: Mapping[str, Any] | None = None, *, data_dir: Path = Path("data"),
               migrate: bool = True) -> Store:
    """The store ``[store]`` describes (SQLite under ``data_dir`` when empty), migrated by default."""
    section = section_table("store", section)
    kind = text("store", "type", section, DEFAULT_STORE_TYPE) or DEFAULT_STORE_TYPE
    cls = STORES.get(kind, "store.type")
    store = cls.from_config(section, data_dir=data_dir)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
