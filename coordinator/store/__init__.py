"""The coordinator's store: devices, births, samples, detections, events, anomalies, dead letters.

``open_store(config["store"], data_dir=...)`` returns a migrated :class:`Store`
chosen by ``[store] type`` (only ``sql`` ships: SQLite by default, PostgreSQL
by URL). Ingest hands :meth:`Store.write_batch` one :class:`WriteBatch` per
pass; redelivered rows are recognised by key and counted, not stored twice.
"""

from coordinator.store.base import DEFAULT_STORE_TYPE, Store, open_store, register_store, store_types
from coordinator.store.config import RetentionConfig
from coordinator.store.plugins.sql import SqlStore
from coordinator.store.records import (
    AnomalyLike,
    AnomalyRecord,
    DeadLetterRecord,
    DetectionRecord,
    DeviceInfo,
    EventRecord,
    RetentionResult,
    Rollup,
    SampleRecord,
    WriteBatch,
    WriteResult,
)
from schemas.errors import StoreError

__all__ = [
    "DEFAULT_STORE_TYPE", "AnomalyLike", "AnomalyRecord", "DeadLetterRecord", "DetectionRecord", "DeviceInfo",
    "EventRecord", "RetentionConfig", "RetentionResult", "Rollup", "SampleRecord", "SqlStore", "Store",
    "StoreError", "WriteBatch", "WriteResult", "open_store", "register_store", "store_types",
]
