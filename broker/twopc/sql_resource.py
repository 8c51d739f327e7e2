"""A SQL database as a two-phase commit participant's resource, through SQLAlchemy 2.

``SqlResource(engine_or_url, participant_id, work)`` prepares, commits and
rolls back the writes that ``work(connection, payload)`` makes
(:mod:`broker.twopc.sql_work`; :func:`~broker.twopc.sql_work.statements_work`
runs a payload of bound SQL statements):

* PostgreSQL: the server's own prepared transactions (``PREPARE TRANSACTION``
  / ``COMMIT PREPARED`` / ``ROLLBACK PREPARED``), a real resource manager as in
  XA; see :mod:`broker.twopc.sql_prepared`. The server must have
  ``max_prepared_transactions > 0``; the constructor says so if not.
* SQLite: intent rows written in a local transaction and applied or dropped by
  the decision; a weaker guarantee, see :mod:`broker.twopc.sql_intents`.

Both keep their state in the database itself, so a participant process that is
killed after preparing finds its prepared work again through
:meth:`SqlResource.prepared_ids` and finishes it as the group decided. Several
participants may share one database: each sees only its own work.

>>> import pathlib, shutil, tempfile, time
>>> from broker.twopc.sql_work import encode_statements, statements_work
>>> from protocols.twopc import Outcome
>>> db = pathlib.Path(tempfile.mkdtemp()) / "shop.db"
>>> shop = SqlResource(f"sqlite:///{db}", "shop", statements_work)
>>> setup = encode_statements([("CREATE TABLE orders (id INTEGER PRIMARY KEY)", {})])
>>> shop.prepare("setup", setup, deadline_s=time.monotonic() + 5), shop.finish("setup", Outcome.COMMIT)
(PrepareAnswer(ok=True, reason=''), None)
>>> order = encode_statements([("INSERT INTO orders (id) VALUES (:id)", {"id": 7})])
>>> shop.prepare("t-1", order, deadline_s=time.monotonic() + 5)
PrepareAnswer(ok=True, reason='')
>>> shop.prepared_ids()
['t-1']
>>> shop.finish("t-1", Outcome.COMMIT)
>>> shop.prepare("t-2", order, deadline_s=time.monotonic() + 5)
PrepareAnswer(ok=False, reason='UNIQUE constraint failed: orders.id')
>>> shop.close(); shutil.rmtree(db.parent)
"""

from __future__ import annotations

import logging
from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from broker.twopc.resource import PrepareAnswer, Resource
from broker.twopc.sql_errors import store_error
from broker.twopc.sql_intents import IntentRows
from broker.twopc.sql_prepared import PreparedTransactions
from broker.twopc.sql_work import Work
from protocols.twopc import Outcome
from protocols.twopc.messages import check_id
from schemas.errors import ConfigError

__all__ = ["SqlResource", "open_engine"]

logger = logging.getLogger(__name__)


def open_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL ``url``; a bare ``postgresql://`` gets psycopg (3)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"SQL participant url {url!r} is not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"SQL participant url: SQLite and PostgreSQL can take part, not {backend!r}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # SQLite: the pool hands a connection to whichever worker thread asks next.
    connect_args = {"check_same_thread": False} if backend == "sqlite" else {}
    try:
        return create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    except SQLAlchemyError as exc:
        raise store_error(f"cannot open {parsed.render_as_string()}", exc) from exc
    except ImportError as exc:  # psycopg is an extra
        raise ConfigError(f"cannot open {parsed.render_as_string()}: {exc} "
                          "(pip install 'edgebus[postgres]')") from exc


class SqlResource:
    """A :class:`~broker.twopc.resource.Resource` over SQLite or PostgreSQL (see the module docstring).

    ``engine_or_url``: an Engine (left open by :meth:`close`; a SQLite one must
    allow several threads, ``connect_args={"check_same_thread": False}``, since
    the driver calls from worker threads) or a URL (the engine is made here and
    closed by :meth:`close`). ``keep_done_s`` and
    ``busy_timeout_s`` are SQLite's (how long done markers stay; how long a
    finish waits for another writer). Construction raises
    :class:`~schemas.errors.StoreError` when the database cannot serve
    (unreachable, prepared transactions disabled) and ConfigError for a URL
    it cannot use.
    """

    def __init__(self, engine_or_url: Engine | str, participant_id: str, work: Work, *,
                 keep_done_s: float = 3600.0, busy_timeout_s: float = 5.0) -> None:
        self.participant_id = check_id("SQL participant id", participant_id)
        owns_engine = isinstance(engine_or_url, str)
        self.engine = open_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
        self._owns_engine = owns_engine
        self.backend: PreparedTransactions | IntentRows
        try:
            dialect = self.engine.dialect.name
            if dialect == "postgresql":
                self.backend = PreparedTransactions(self.engine, participant_id, work)
            elif dialect == "sqlite":
                self.backend = IntentRows(self.engine, participant_id, work, keep_done_s=keep_done_s,
                                          busy_timeout_s=busy_timeout_s)
            else:
                raise ConfigError(f"SQL participant {participant_id}: SQLite and PostgreSQL can take part, "
                                  f"not {dialect}")
        except BaseException:
            if owns_engine:
                self.engine.dispose()
            raise
        logger.info("SQL participant %s on %s (%s)", participant_id, self.engine.url.render_as_string(),
                    "prepared transactions" if dialect == "postgresql" else "intent rows")

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        """Run the work and hold it prepared; refuse (never raise) when it fails or the deadline passes.

        ``deadline_s`` is a time of ``time.monotonic()``. A repeat of a prepared id answers yes.
        """
        return self.backend.prepare(tx_id, payload, deadline_s)

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        """Commit or roll back what ``tx_id`` holds prepared; nothing held is done. StoreError: retry."""
        self.backend.finish(tx_id, outcome)

    def prepared_ids(self) -> list[str]:
        """The transactions this participant holds prepared in the database, oldest first."""
        return self.backend.prepared_ids()

    @property
    def counters(self) -> Counter[str]:
        """``prepared``, ``refused``, ``committed``, ``aborted`` and (SQLite) ``commit_failed``."""
        return self.backend.counters

    def close(self) -> None:
        """Close the engine if this resource made it; prepared work stays in the database."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if TYPE_CHECKING:
    def _is_a_resource(resource: SqlResource) -> Resource:  # mypy checks SqlResource against the protocol
        return resource
