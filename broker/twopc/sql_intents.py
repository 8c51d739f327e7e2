"""A SQL participant on SQLite: intent rows stand in for the prepared state SQLite does not have.

* ``prepare`` opens a write transaction (``BEGIN IMMEDIATE``), runs the work
  inside a savepoint and rolls the savepoint back (a dry run: work that fails
  votes no), then writes an intent row ``(participant, tx_id, payload)`` and
  commits. The intent is durable once ``prepare`` answers yes.
* ``finish(commit)`` runs the work again, deletes the intent and writes a done
  marker in one local transaction; ``finish(abort)`` deletes the intent (and
  marks it done). A repeat finds no intent and does nothing.
* ``prepared_ids`` lists the participant's intent rows.

Weaker than PostgreSQL's prepared transactions: a prepared intent holds no
locks, so work that passed the dry run can still fail when it runs for real
at commit time if something else changed the data in between (a row the work
inserts was inserted meanwhile, a row it updates was deleted and a trigger
refuses ...). The outcome is already decided then and cannot become an abort.
The resource rolls that attempt back, keeps the intent, adds 1 to its
``commit_attempts`` and writes the database's message to its ``last_error``
column, counts ``commit_failed``, logs an error, and raises
:class:`~schemas.errors.StoreError` (``transient=False``); the participant
driver then retries (about once a second) and does not acknowledge the
transaction, so it stays open in the group (``edge-bus tx status`` shows it
decided but not ended). An operator sees the error in the log, the row in
``edgebus_twopc_intent`` with ``commit_attempts > 0``, fixes the conflicting
data, and the next retry commits. Work that only updates rows by key and
tolerates their current values (``SET n = n - 1``) never meets this; work that
must not be retried blindly belongs on PostgreSQL.

SQLite locks the whole database for writing: a prepare waits for another
writer at most until its deadline (``busy_timeout``) and then refuses with
``lock wait timeout: database is locked``. Done markers are kept for
``keep_done_s`` (default one hour) for operators; correctness needs only the
intent rows (the participant's own records refuse a late repeat prepare).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from broker.twopc.resource import PrepareAnswer
from broker.twopc.sql_errors import one_line, refusal_reason, store_error
from broker.twopc.sql_work import Work
from protocols.twopc import Outcome
from schemas.errors import ConfigError, StoreError

__all__ = ["DONE_TABLE", "INTENT_TABLE", "IntentRows"]

logger = logging.getLogger(__name__)

INTENT_TABLE = "edgebus_twopc_intent"
DONE_TABLE = "edgebus_twopc_done"
_PRUNE_EVERY_S = 60.0
_PREPARED = "prepared"

_metadata = sa.MetaData()
_intents = sa.Table(
    INTENT_TABLE, _metadata,
    sa.Column("participant", sa.Text, primary_key=True),
    sa.Column("tx_id", sa.Text, primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("prepared_ms", sa.BigInteger, nullable=False),
    sa.Column("commit_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
)
_done = sa.Table(
    DONE_TABLE, _metadata,
    sa.Column("participant", sa.Text, primary_key=True),
    sa.Column("tx_id", sa.Text, primary_key=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("done_ms", sa.BigInteger, nullable=False),
    sa.Index(f"{DONE_TABLE}_by_time", "done_ms"),
)


class _Refused(Exception):
    """The prepare refuses for a reason of its own (not a database error)."""


class _CommitFailed(Exception):
    """The work failed when it ran for real at commit time; ``reason`` is the database's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _now_ms() -> int:
    return int(time.time() * 1000)


def _in_transaction(conn: Connection) -> bool:
    return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]


class IntentRows:
    """One participant's prepared work as intent rows in SQLite (see the module docstring)."""

    def __init__(self, engine: Engine, participant_id: str, work: Work, *, keep_done_s: float = 3600.0,
                 busy_timeout_s: float = 5.0) -> None:
        database = engine.url.database or ""
        if database in ("", ":memory:") or "mode=memory" in database or \
                engine.url.query.get("mode") == "memory":
            raise ConfigError(f"participant {participant_id}: an in-memory SQLite database loses prepared "
                              "work with the process; give the SQL participant a database file")
        self.engine = engine
        self.participant_id = participant_id
        self.work = work
        self.keep_done_ms = int(keep_done_s * 1000)
        self.busy_timeout_ms = max(1, int(busy_timeout_s * 1000))
        self.counters: Counter[str] = Counter()
        self._next_prune = 0.0
        try:
            _metadata.create_all(engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise store_error(f"participant {participant_id}: cannot create the intent tables in "
                              f"{engine.url.render_as_string()}", exc) from exc

    @contextmanager
    def _transaction(self, busy_timeout_ms: int) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock up front, so reads inside it
        stay consistent and the wait for another writer is bounded by ``busy_timeout_ms``)."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")  # the driver issues no BEGIN of its own
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                if _in_transaction(conn):
                    with suppress(SQLAlchemyError):
                        conn.exec_driver_sql("ROLLBACK")
                raise

    def _state(self, conn: Connection, tx_id: str) -> str | None:
        """``prepared`` (an intent row), the outcome of a done marker, or None."""
        if conn.execute(sa.select(_intents.c.tx_id).where(*self._key(_intents, tx_id))).first() is not None:
            return _PREPARED
        outcome: str | None = conn.execute(sa.select(_done.c.outcome)
                                           .where(*self._key(_done, tx_id))).scalar()
        return outcome

    def _key(self, table: sa.Table, tx_id: str) -> tuple[sa.ColumnElement[bool], ...]:
        return (table.c.participant == self.participant_id, table.c.tx_id == tx_id)

    # ---- prepare ---------------------------------------------------------------------------------

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        left_s = deadline_s - time.monotonic()
        if left_s <= 0:
            return PrepareAnswer(False, "deadline passed before the prepare began")
        try:
            with self._transaction(max(1, int(left_s * 1000))) as conn:
                state = self._state(conn, tx_id)
                if state == _PREPARED:  # a repeated prepare: the intent is there already
                    return PrepareAnswer(True)
                if state is not None:
                    raise _Refused(f"already finished here ({state})")
                self._dry_run(conn, payload)
                if time.monotonic() > deadline_s:
                    raise _Refused("deadline passed during the work")
                conn.execute(_intents.insert().values(participant=self.participant_id, tx_id=tx_id,
                                                      payload=payload, prepared_ms=_now_ms()))
        except Exception as exc:  # the work's own errors too: every failure is a no vote
            reason = str(exc) if isinstance(exc, _Refused) else refusal_reason(exc)
            logger.info("participant %s refuses %s: %s", self.participant_id, tx_id, reason)
            self.counters["refused"] += 1
            return PrepareAnswer(False, reason)
        self.counters["prepared"] += 1
        return PrepareAnswer(True)

    def _dry_run(self, conn: Connection, payload: bytes) -> None:
        conn.exec_driver_sql("SAVEPOINT edgebus_dry_run")
        try:
            self.work(conn, payload)
            if not _in_transaction(conn):
                raise _Refused("the work ended the transaction itself (it must not commit or roll back)")
        finally:
            if _in_transaction(conn):
                conn.exec_driver_sql("ROLLBACK TO edgebus_dry_run")
                conn.exec_driver_sql("RELEASE edgebus_dry_run")

    # ---- finish ----------------------------------------------------------------------------------

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        try:
            with self._transaction(self.busy_timeout_ms) as conn:
                payload = conn.execute(sa.select(_intents.c.payload)
                                       .where(*self._key(_intents, tx_id))).scalar()
                if payload is None:
                    self._nothing_held(conn, tx_id, outcome)
                    return
                if outcome is Outcome.COMMIT:
                    try:
                        self.work(conn, payload)
                    except Exception as exc:
                        raise _CommitFailed(refusal_reason(exc)) from exc
                conn.execute(_intents.delete().where(*self._key(_intents, tx_id)))
                marker = sqlite_insert(_done).values(participant=self.participant_id, tx_id=tx_id,
                                                     outcome=outcome.value, done_ms=_now_ms())
                conn.execute(marker.on_conflict_do_update(
                    index_elements=[_done.c.participant, _done.c.tx_id],
                    set_={"outcome": marker.excluded.outcome, "done_ms": marker.excluded.done_ms}))
                self._prune_markers(conn)
            self.counters["committed" if outcome is Outcome.COMMIT else "aborted"] += 1
        except _CommitFailed as exc:
            self._commit_failed(tx_id, exc.reason)
            raise StoreError(
                f"participant {self.participant_id}: the work of {tx_id} failed at commit time "
                f"({exc.reason}); its intent stays in {INTENT_TABLE} and the commit is retried: fix "
                "the data it conflicts with") from exc.__cause__
        except SQLAlchemyError as exc:
            raise store_error(f"participant {self.participant_id}: cannot {outcome.value} {tx_id}",
                              exc) from exc
        logger.debug("participant %s: %s %s", self.participant_id, outcome.value, tx_id)

    def _nothing_held(self, conn: Connection, tx_id: str, outcome: Outcome) -> None:
        done = conn.execute(sa.select(_done.c.outcome).where(*self._key(_done, tx_id))).scalar()
        if done is not None and done != outcome.value:
            logger.error("participant %s: asked to %s %s, which was %s here; nothing changed",
                         self.participant_id, outcome.value, tx_id, done)
        else:
            logger.debug("participant %s: %s holds no intent (finished before)", self.participant_id, tx_id)

    def _commit_failed(self, tx_id: str, reason: str) -> None:
        self.counters["commit_failed"] += 1
        logger.error("participant %s: the work of committed transaction %s failed at commit time: %s; "
                     "the intent stays and the commit is retried", self.participant_id, tx_id, reason)
        try:
            with self._transaction(self.busy_timeout_ms) as conn:
                conn.execute(_intents.update().where(*self._key(_intents, tx_id)).values(
                    commit_attempts=_intents.c.commit_attempts + 1, last_error=one_line(reason, 1000)))
        except SQLAlchemyError:
            logger.warning("participant %s: could not note the failure on the intent of %s",
                           self.participant_id, tx_id, exc_info=True)

    def _prune_markers(self, conn: Connection) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + _PRUNE_EVERY_S
        conn.execute(_done.delete().where(_done.c.participant == self.participant_id,
                                          _done.c.done_ms < _now_ms() - self.keep_done_ms))

    # ---- recovery --------------------------------------------------------------------------------

    def prepared_ids(self) -> list[str]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(sa.select(_intents.c.tx_id)
                                         .where(_intents.c.participant == self.participant_id)
                                         .order_by(_intents.c.prepared_ms)).scalars())
        except SQLAlchemyError as exc:
            raise store_error(f"participant {self.participant_id}: cannot list intents", exc) from exc
