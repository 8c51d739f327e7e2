"""The store's one error type, so callers catch storage failures without knowing SQLAlchemy."""

from __future__ import annotations

from schemas.errors import EdgebusError

__all__ = ["StoreError"]


class StoreError(EdgebusError):
    """The database could not be opened, migrated, read or written (the cause is chained).

    ``transient`` is True when trying again later can succeed (the database
    was locked, unreachable or out of space), False when the same request
    will fail again (a constraint, bad data).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
