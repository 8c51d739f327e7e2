"""The store's one error type, so callers catch storage failures without knowing SQLAlchemy."""

from __future__ import annotations

from schemas.errors import EdgebusError

__all__ = ["StoreError"]


class StoreError(EdgebusError):
    """The database could not be opened, migrated, read or written (the cause is chained)."""
