"""Store backends for the store tests: SQLite always, PostgreSQL when EDGEBUS_TEST_POSTGRES_URL is set.

Each test gets its own SQLite file or its own PostgreSQL schema (dropped
afterwards), so parallel and repeated runs never see each other's rows. With
the variable set, an unreachable server fails the test: CI must not pass by
skipping the PostgreSQL half.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from coordinator.store import RetentionConfig, SqlStore
from coordinator.store.sql_engine import normalise_url

__all__ = ["POSTGRES_ENV", "StoreFactory", "backend", "open_backend", "postgres_url"]

POSTGRES_ENV = "EDGEBUS_TEST_POSTGRES_URL"

StoreFactory = Callable[..., SqlStore]


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The backend name; the PostgreSQL half is skipped only when the variable is unset."""
    if request.param == "postgresql" and postgres_url() is None:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    yield request.param


@pytest.fixture
def open_backend(backend: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """``open_backend(retention=...)`` opens (and migrates) a store at this test's one location."""
    opened: list[SqlStore] = []
    schema = f"edgebus_test_{uuid.uuid4().hex[:16]}" if backend == "postgresql" else None

    def factory(retention: RetentionConfig | None = None, migrate: bool = True) -> SqlStore:
        if backend == "postgresql":
            store = SqlStore.open(postgres_url(), schema=schema, retention=retention)
        else:
            store = SqlStore.open(f"sqlite:///{tmp_path / 'store.db'}", retention=retention)
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield factory
    for store in opened:
        store.close()
    if schema is not None:
        engine = sa.create_engine(normalise_url(postgres_url() or ""))
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()


def table_names(store: SqlStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def scalar(store: SqlStore, sql: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()
