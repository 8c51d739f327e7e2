"""Schema migrations, run programmatically from the revisions shipped in ``migrations/``.

The coordinator calls :func:`upgrade` on every start; it is a no-op when the
database is at the head revision. On PostgreSQL an advisory lock serialises
coordinators that start together against one database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ["MIGRATIONS", "current_revision", "downgrade", "head_revision", "upgrade"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x6564676562757301  # "edgebus\x01": one advisory lock id for migrations


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the shipped migrations have no head revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` (raises SQLAlchemy/Alembic errors)."""
    _migrate(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema (and the data in it) back to ``revision``, for an operator rolling back."""
    _migrate(engine, lambda config: command.downgrade(config, revision))


def _migrate(engine: Engine, step: Callable[[Config], None]) -> None:
    config = _config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        step(config)
        after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        logger.info("store schema migrated from %s to %s", before or "empty", after)
