"""A SQL participant on PostgreSQL: the server's own prepared transactions hold the prepared work.

``prepare`` runs the work in a transaction and ends it with ``PREPARE
TRANSACTION gid``: the server has then made the work durable and holds its
locks, detached from any session, until ``COMMIT PREPARED`` or ``ROLLBACK
PREPARED`` (issued by ``finish``, from any session of the same role and
database). A killed participant process loses nothing: a new one finds its
prepared transactions in ``pg_prepared_xacts`` by the gid prefix
(:mod:`broker.twopc.sql_gids`) and finishes them as the group decided.

Waiting for row locks is bounded by ``SET LOCAL lock_timeout`` (the time left
to the deadline): a prepare that waits too long refuses with ``lock wait
timeout: ...``. A work that runs past the deadline is rolled back and refused.

A gid whose transaction part had to be hashed is written, with its transaction
id, to the table ``edgebus_twopc_gid`` in a committed transaction before the
``PREPARE TRANSACTION``, and deleted after the finish; a crash in between
leaves a harmless row, removed by the next finish of that id.

The server must allow prepared transactions (``max_prepared_transactions >
0``, set in postgresql.conf, needs a restart); the constructor checks. Work that
touched temporary tables cannot be prepared (the server refuses; the vote is
no). A prepared transaction holds its locks and keeps VACUUM from removing dead
rows until it is finished, which is why the group finishes it even when its
manager dies.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from broker.twopc.resource import PrepareAnswer
from broker.twopc.sql_errors import refusal_reason, sqlstate, store_error
from broker.twopc.sql_gids import GidCodec
from broker.twopc.sql_work import Work
from protocols.twopc import Outcome
from schemas.errors import StoreError

__all__ = ["GID_TABLE", "PreparedTransactions"]

logger = logging.getLogger(__name__)

GID_TABLE = "edgebus_twopc_gid"
_UNDEFINED_OBJECT = "42704"  # "prepared transaction with identifier ... does not exist"

_metadata = sa.MetaData()
_gids = sa.Table(
    GID_TABLE, _metadata,
    sa.Column("gid", sa.Text, primary_key=True),
    sa.Column("participant", sa.Text, nullable=False),
    sa.Column("tx_id", sa.Text, nullable=False),
)


# The server's view of what is prepared (all databases).
_prepared_xacts = sa.table("pg_prepared_xacts", sa.column("gid", sa.Text))


class _Refused(Exception):
    """The prepare refuses for a reason of its own (not a database error)."""


class PreparedTransactions:
    """One participant's prepared work in PostgreSQL (see the module docstring)."""

    def __init__(self, engine: Engine, participant_id: str, work: Work) -> None:
        self.engine = engine
        self.participant_id = participant_id
        self.work = work
        self.gids = GidCodec(participant_id)
        self.counters: Counter[str] = Counter()
        where = f"participant {participant_id}: PostgreSQL at {engine.url.render_as_string()}"
        try:
            with engine.connect() as conn:
                setting = conn.exec_driver_sql("SHOW max_prepared_transactions").scalar()
        except SQLAlchemyError as exc:
            raise store_error(f"{where} cannot be reached", exc) from exc
        if int(setting or 0) <= 0:
            raise StoreError(
                f"{where} has max_prepared_transactions = {setting}, so PREPARE TRANSACTION is "
                "disabled; set max_prepared_transactions above 0 (at least the number of transactions "
                "prepared at once) in postgresql.conf and restart the server")
        try:
            _metadata.create_all(engine, checkfirst=True)
        except SQLAlchemyError as exc:
            # Two participants creating it at once: one wins, the other sees it now.
            if not sa.inspect(engine).has_table(GID_TABLE):
                raise store_error(f"{where}: cannot create the table {GID_TABLE}", exc) from exc

    # ---- prepare ---------------------------------------------------------------------------------

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        left_s = deadline_s - time.monotonic()
        if left_s <= 0:
            return PrepareAnswer(False, "deadline passed before the prepare began")
        gid = self.gids.encode(tx_id)
        hashed = self.gids.is_hashed(gid)
        stage = "work"
        try:
            if hashed:
                self._remember(gid, tx_id)
            with self.engine.connect() as conn:
                if self._held(conn, gid):  # a repeated prepare: the work is prepared already
                    conn.rollback()
                    return PrepareAnswer(True)
                # lock_timeout 0 would mean "wait for ever": at least 1 ms.
                conn.execute(sa.select(sa.func.set_config("lock_timeout", f"{max(1, int(left_s * 1000))}ms",
                                                          True)))
                self.work(conn, payload)
                if time.monotonic() > deadline_s:
                    raise _Refused("deadline passed during the work")
                if _transaction_status(conn) != "INTRANS":
                    raise _Refused("the work ended the transaction itself (it must not commit or roll back)")
                stage = "preparing"
                _gid_command(conn, "PREPARE TRANSACTION", gid)
                stage = "prepared"
                conn.commit()  # ends SQLAlchemy's transaction; the server has none left to commit
        except Exception as exc:  # the work's own errors too: every failure is a no vote
            if stage == "prepared":  # the server answered the PREPARE: the work is durable
                logger.warning("participant %s: %s is prepared; the connection failed after it: %s",
                               self.participant_id, tx_id, exc)
            else:
                return self._refuse(tx_id, gid, stage, exc)
        self.counters["prepared"] += 1
        return PrepareAnswer(True)

    def _refuse(self, tx_id: str, gid: str, stage: str, exc: Exception) -> PrepareAnswer:
        reason = str(exc) if isinstance(exc, _Refused) else refusal_reason(exc)
        logger.info("participant %s refuses %s: %s", self.participant_id, tx_id, reason)
        if stage == "preparing" and sqlstate(exc) is None:
            # No answer from the server (the connection failed): it may have prepared all the same.
            # Undo that, since the vote is no; if the server cannot be reached now, the prepared
            # work waits for the next recovery, which finds it and asks the group (abort).
            with suppress(StoreError):
                self.finish(tx_id, Outcome.ABORT)
        if self.gids.is_hashed(gid):
            self._forget_quietly(gid)
        self.counters["refused"] += 1
        return PrepareAnswer(False, reason)

    def _held(self, conn: Connection, gid: str) -> bool:
        found = conn.execute(sa.text("SELECT 1 FROM pg_prepared_xacts WHERE gid = :gid "
                                     "AND database = current_database()"), {"gid": gid}).first()
        return found is not None

    def _remember(self, gid: str, tx_id: str) -> None:
        stmt = pg_insert(_gids).values(
            gid=gid, participant=self.participant_id, tx_id=tx_id).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def _forget_quietly(self, gid: str) -> None:
        """Drop the mapping of a gid that a refused prepare wrote, unless an earlier prepare holds it."""
        held = sa.select(sa.literal(1)).where(_prepared_xacts.c.gid == gid)
        try:
            with self.engine.begin() as conn:
                conn.execute(_gids.delete().where(_gids.c.gid == gid, ~held.exists()))
        except SQLAlchemyError:
            logger.warning("participant %s: could not delete the gid mapping %s (harmless)",
                           self.participant_id, gid, exc_info=True)

    # ---- finish ----------------------------------------------------------------------------------

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        gid = self.gids.encode(tx_id)
        command = "COMMIT PREPARED" if outcome is Outcome.COMMIT else "ROLLBACK PREPARED"
        try:
            with self._autocommit() as conn:
                try:
                    _gid_command(conn, command, gid)
                except DBAPIError as exc:
                    if sqlstate(exc) != _UNDEFINED_OBJECT:
                        raise
                    logger.debug("participant %s: %s holds nothing prepared (finished before)",
                                 self.participant_id, tx_id)
                else:
                    self.counters["committed" if outcome is Outcome.COMMIT else "aborted"] += 1
                    logger.debug("participant %s: %s %s", self.participant_id, command, tx_id)
                if self.gids.is_hashed(gid):
                    conn.execute(_gids.delete().where(_gids.c.gid == gid))
        except SQLAlchemyError as exc:
            raise store_error(f"participant {self.participant_id}: cannot {command} {tx_id}", exc) from exc

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A connection outside any transaction block (COMMIT PREPARED cannot run inside one)."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    # ---- recovery --------------------------------------------------------------------------------

    def prepared_ids(self) -> list[str]:
        try:
            with self.engine.connect() as conn:
                gids = conn.execute(sa.text(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() "
                    "AND starts_with(gid, :prefix) ORDER BY prepared"),
                    {"prefix": self.gids.prefix}).scalars().all()
                hashed = [gid for gid in gids if self.gids.is_hashed(gid)]
                mapped: dict[str, str] = {}
                if hashed:
                    rows = conn.execute(sa.select(_gids.c.gid, _gids.c.tx_id).where(_gids.c.gid.in_(hashed)))
                    mapped = {gid: tx_id for gid, tx_id in rows}
        except SQLAlchemyError as exc:
            raise store_error(f"participant {self.participant_id}: cannot list prepared transactions",
                              exc) from exc
        ids: list[str] = []
        for gid in gids:
            tx_id = mapped.get(gid) if self.gids.is_hashed(gid) else self.gids.decode(gid)
            if tx_id is None:
                logger.error("participant %s: prepared transaction %r is not one this participant can "
                             "name; resolve it by hand (COMMIT PREPARED or ROLLBACK PREPARED)",
                             self.participant_id, gid)
                continue
            ids.append(tx_id)
        return ids


def _gid_command(conn: Connection, command: str, gid: str) -> None:
    """``command 'gid'``: these commands take no bind parameters, and the gid needs no quoting (the
    codec admits no quote); ``no_parameters`` keeps the driver from reading its ``%`` as placeholders."""
    conn.exec_driver_sql(f"{command} '{gid}'", execution_options={"no_parameters": True})


def _transaction_status(conn: Connection) -> str:
    """psycopg's view of the server's transaction state (IDLE, INTRANS, INERROR ...)."""
    status = conn.connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
    return str(status.name)
