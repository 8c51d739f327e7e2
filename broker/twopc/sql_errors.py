"""What a database error means to a SQL participant: a refusal reason for its no vote, or a StoreError.

A refusal reason travels in a ``Vote`` and on to the client's ``Decision``,
so it is one printable line of at most 256 characters: the database's own
message (``duplicate key value violates unique constraint ...``), with
``lock wait timeout:`` in front when the prepare gave up waiting for a lock.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from protocols.twopc.messages import MAX_REASON_CHARS
from schemas.errors import StoreError

__all__ = ["LOCK_TIMEOUT", "one_line", "refusal_reason", "sqlstate", "store_error"]

LOCK_TIMEOUT = "lock wait timeout"
_PG_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired (or NOWAIT)
_SQLITE_BUSY = 5  # the primary code; extended codes carry it in the low byte


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of ``exc`` (a DBAPIError from psycopg), else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _is_lock_wait(exc: BaseException) -> bool:
    if sqlstate(exc) == _PG_LOCK_NOT_AVAILABLE:
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_BUSY


def _message(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    diag = getattr(orig, "diag", None)  # psycopg: the server's message without SQLAlchemy's echo
    primary = getattr(diag, "message_primary", None)
    if isinstance(primary, str) and primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary}: {detail}" if isinstance(detail, str) and detail else primary
    return str(orig) or type(orig).__name__


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def refusal_reason(exc: BaseException) -> str:
    """The reason a no vote gives for ``exc`` (any exception the work or the database raised)."""
    message = _message(exc)
    if _is_lock_wait(exc):
        message = f"{LOCK_TIMEOUT}: {message}"
    return one_line(message)


def store_error(what: str, exc: SQLAlchemyError) -> StoreError:
    """A StoreError for ``exc``; transient when the database was unreachable or locked."""
    transient = isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)
    return StoreError(f"{what}: {one_line(_message(exc), 1000)}", transient=transient)
