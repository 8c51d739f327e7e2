"""Store configuration: strict keys, the plugin registry, and the zero-set-up default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator.store import RetentionConfig, SqlStore, open_store, register_store, store_types
from coordinator.store.base import STORES
from schemas.errors import ConfigError


def test_default_is_a_migrated_sqlite_store_in_the_data_directory(tmp_path: Path) -> None:
    with open_store(None, data_dir=tmp_path / "data") as store:
        assert isinstance(store, SqlStore)
        assert store.engine.url.database == str(tmp_path / "data" / "coordinator.db")
        assert store.count_samples() == 0
        assert store.retention == RetentionConfig()


def test_a_full_sql_section_is_accepted(tmp_path: Path) -> None:
    section = {"type": "sql", "url": f"sqlite:///{tmp_path / 'x.db'}", "busy_timeout_ms": 250,
               "retention": {"raw_days": 3, "downsample_after_days": 0.5, "downsample_interval_s": 300,
                             "rollup_days": 0, "detection_days": 1, "anomaly_days": 10,
                             "dead_letter_days": 2}}
    with open_store(section, data_dir=tmp_path) as store:
        assert isinstance(store, SqlStore)
        assert store.retention == RetentionConfig(3, 0.5, 300, 0, 1, 10, 2)


@pytest.mark.parametrize(("section", "message"), [
    ({"urll": "sqlite://"}, "unknown key store.urll"),
    ({"retention": {"raw_day": 3}}, "unknown key store.retention.raw_day"),
    ({"type": "mongo"}, "store.type: unknown store type 'mongo'; known: sql"),
    ({"url": 5}, "store.url must be a string"),
    ({"url": ""}, "store.url must not be empty"),
    ({"url": "mysql://db/x"}, "supports sqlite and postgresql"),
    ({"url": "not a url"}, "is not a database URL"),
    ({"schema": "edgebus"}, "store.schema is for PostgreSQL"),
    ({"busy_timeout_ms": 1.5}, "store.busy_timeout_ms must be an integer"),
    ({"retention": {"raw_days": -1}}, "store.retention.raw_days must be >= 0"),
    ({"retention": {"raw_days": True}}, "store.retention.raw_days must be a number"),
    ({"retention": {"downsample_interval_s": 0}}, "downsample_interval_s must be > 0"),
    ({"retention": {"raw_days": 1, "downsample_after_days": 2}}, "deleted before they are downsampled"),
    ({"retention": "forever"}, "store.retention must be a table"),
])
def test_bad_configuration_names_the_key(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(section, data_dir=tmp_path)


def test_a_bad_postgres_schema_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="lower-case SQL identifier"):
        SqlStore.open("postgresql://x@127.0.0.1:1/db", schema='x"; drop')


def test_a_bare_postgresql_url_uses_psycopg3() -> None:
    store = SqlStore.open("postgresql://x@127.0.0.1:1/db")
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
    finally:
        store.close()


def test_store_types_are_plugins() -> None:
    assert "sql" in store_types()
    with pytest.raises(ConfigError, match="already registered"):
        register_store(type("Other", (SqlStore,), {}))

    @register_store
    class NullStore(SqlStore):
        TYPE = "test-null"

        @classmethod
        def from_config(cls, section: Any, *, data_dir: Path) -> SqlStore:
            return SqlStore.open("sqlite://")

    try:
        assert "test-null" in store_types()
        with open_store({"type": "test-null"}) as store:
            assert store.count_samples() == 0
    finally:
        STORES.unregister("test-null")
