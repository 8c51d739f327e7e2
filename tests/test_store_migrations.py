"""Schema migrations: from empty to head on every backend, idempotent, and in step with tables.py."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from coordinator.store import SampleRecord, SqlStore, WriteBatch
from coordinator.store.migrate import head_revision
from coordinator.store.tables import metadata
from tests.test_store_support import StoreFactory, backend, open_backend, table_names

__all__ = ["backend", "open_backend"]

TABLES = {"devices", "births", "metric_blocks", "metric_rollups", "detections", "events", "anomalies",
          "dead_letters", "sequence_state", "store_meta"}


def test_migrate_creates_the_schema_from_empty(open_backend: StoreFactory) -> None:
    store = open_backend(migrate=False)
    assert not TABLES & table_names(store)
    assert store.schema_revision() is None
    store.migrate()
    assert table_names(store) >= TABLES | {"alembic_version"}
    assert store.schema_revision() == head_revision()


def test_second_migrate_is_a_no_op_and_keeps_data(open_backend: StoreFactory) -> None:
    store = open_backend()
    store.write_batch(WriteBatch(samples=[SampleRecord("gw-1", 1, 0, 1_000, "cpu", 1.0)]))
    store.migrate()
    store.close()
    reopened = open_backend()
    assert reopened.schema_revision() == head_revision()
    assert reopened.count_samples() == 1


def test_migrations_match_the_table_definitions(open_backend: StoreFactory) -> None:
    store = open_backend()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_every_revision_is_shipped_inside_the_package() -> None:
    versions = Path(__file__).resolve().parents[1] / "coordinator" / "store" / "migrations" / "versions"
    assert (versions / "0001_initial.py").is_file()
    assert (versions / "0002_metric_blocks.py").is_file()
    assert (versions / "0003_anomaly_calibrated.py").is_file()
    assert (versions / "0004_anomaly_acknowledgement.py").is_file()
    assert (versions / "0005_placement_decisions.py").is_file()
    assert (versions / "0007_audit_events.py").is_file()
    assert (versions / "0008_detector_states.py").is_file()
    assert head_revision() == "0008"


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    store = SqlStore.open(data_dir=tmp_path)
    store.migrate()
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 5000
        assert (tmp_path / "coordinator.db").is_file()
    finally:
        store.close()
