"""SqlResource on a private PostgreSQL (prepared transactions) and on SQLite (intent rows).

Every behaviour runs on both backends against real databases: the PostgreSQL
half on the private server of tests/postgres_server.py (the shared one has
prepared transactions off), which fails rather than skips in CI. The crash
tests prepare in a separate Python process, kill it with SIGKILL and finish
from a new resource.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import sqlalchemy as sa

from broker.twopc.resource import PrepareAnswer
from broker.twopc.sql_gids import GID_NAMESPACE
from broker.twopc.sql_intents import INTENT_TABLE
from broker.twopc.sql_prepared import GID_TABLE
from broker.twopc.sql_resource import SqlResource, open_engine
from broker.twopc.sql_work import encode_statements, statements_work
from protocols.twopc import Outcome
from schemas.errors import ConfigError, StoreError
from tests.postgres_server import POSTGRES_ENV

ROOT = Path(__file__).resolve().parent.parent

SCHEMA = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL)",
    "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "INSERT INTO counter (id, n) VALUES (1, 0)",
    "INSERT INTO items (id, label) VALUES (1, 'existing')",
]


def later(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def insert_item(item_id: int, label: str = "new") -> bytes:
    return encode_statements([("INSERT INTO items (id, label) VALUES (:id, :label)",
                               {"id": item_id, "label": label})])


BUMP = encode_statements([("UPDATE counter SET n = n + 1 WHERE id = 1", {})])
BOTH = encode_statements([("INSERT INTO items (id, label) VALUES (2, 'two')", {}),
                          ("UPDATE counter SET n = n + 10 WHERE id = 1", {})])


class Db:
    """The test's own view of the database the resource writes to."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)
        self.postgres = self.engine.dialect.name == "postgresql"

    def value(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def labels(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return {int(k): v for k, v in conn.execute(sa.text("SELECT id, label FROM items"))}

    def counter(self) -> int:
        return int(self.value("SELECT n FROM counter WHERE id = 1"))

    def prepared_gids(self) -> list[str]:
        """What the server holds prepared in this database (PostgreSQL), or the intent rows (SQLite)."""
        if self.postgres:
            with self.engine.connect() as conn:
                return list(conn.execute(sa.text("SELECT gid FROM pg_prepared_xacts "
                                                 "WHERE database = current_database()")).scalars())
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT tx_id FROM {INTENT_TABLE}")).scalars())


def shop_database(url: str) -> Iterator[Db]:
    database = Db(url)
    with database.engine.begin() as conn:
        for statement in SCHEMA:
            conn.execute(sa.text(statement))
    yield database
    database.engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """The shop's tables on the private PostgreSQL server, then in a SQLite file."""
    if request.param == "postgresql":
        yield from shop_database(request.getfixturevalue("postgres_database"))
    else:
        yield from shop_database(f"sqlite:///{tmp_path / 'participant.db'}")


@pytest.fixture
def pg(postgres_database: str) -> Iterator[Db]:
    yield from shop_database(postgres_database)


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Db]:
    yield from shop_database(f"sqlite:///{tmp_path / 'participant.db'}")


@pytest.fixture
def resource(db: Db) -> Iterator[SqlResource]:
    with SqlResource(db.url, "shop-db", statements_work) as res:
        yield res


# ---- prepare, commit, abort ------------------------------------------------------------------------


def test_prepare_then_commit_makes_the_writes_visible(db: Db, resource: SqlResource) -> None:
    assert resource.prepare("t-1", BOTH, later()) == PrepareAnswer(True)
    assert db.labels() == {1: "existing"} and db.counter() == 0  # prepared is not committed
    assert resource.prepared_ids() == ["t-1"]
    assert len(db.prepared_gids()) == 1
    resource.finish("t-1", Outcome.COMMIT)
    assert db.labels() == {1: "existing", 2: "two"}
    assert db.counter() == 10
    assert resource.prepared_ids() == []
    assert db.prepared_gids() == []


def test_prepare_then_abort_leaves_nothing(db: Db, resource: SqlResource) -> None:
    assert resource.prepare("t-1", BOTH, later()).ok
    resource.finish("t-1", Outcome.ABORT)
    assert db.labels() == {1: "existing"}
    assert db.counter() == 0
    assert resource.prepared_ids() == []
    assert db.prepared_gids() == []
    # The rows the aborted work would have written are free: the same work prepares again.
    assert resource.prepare("t-2", BOTH, later()).ok
    resource.finish("t-2", Outcome.COMMIT)
    assert db.counter() == 10


def test_the_postgresql_gid_is_readable(pg: Db) -> None:
    with SqlResource(pg.url, "shop-db", statements_work) as resource:
        assert resource.prepare("order:42 100%", BUMP, later()).ok
        assert pg.prepared_gids() == [f"{GID_NAMESPACE}:shop-db:order%3A42%20100%25"]
        assert resource.prepared_ids() == ["order:42 100%"]
        resource.finish("order:42 100%", Outcome.COMMIT)
    assert pg.counter() == 1


# ---- refusals -----------------------------------------------------------------------------------------


def test_bad_work_votes_no_with_the_database_reason(db: Db, resource: SqlResource) -> None:
    answer = resource.prepare("t-dup", insert_item(1), later())
    assert not answer.ok
    expected = "duplicate key value violates unique constraint" if db.postgres else "UNIQUE constraint failed"
    assert expected in answer.reason
    assert answer.reason.isprintable() and len(answer.reason) <= 256

    answer = resource.prepare("t-missing", encode_statements([("UPDATE nowhere SET x = 1", {})]), later())
    assert not answer.ok and "nowhere" in answer.reason

    answer = resource.prepare("t-garbage", b"\xc1 not msgpack", later())
    assert not answer.ok and "msgpack" in answer.reason

    answer = resource.prepare("t-commit", msgpack.packb([["COMMIT", {}]]), later())
    assert not answer.ok and "transaction control" in answer.reason

    assert resource.prepared_ids() == []
    assert db.prepared_gids() == []
    assert db.labels() == {1: "existing"}


def test_a_work_function_that_raises_votes_no_with_its_message(db: Db) -> None:
    def refuse(conn: sa.Connection, payload: bytes) -> None:
        conn.execute(sa.text("UPDATE counter SET n = 99"))
        raise ValueError(f"no stock for {payload.decode()}\nsecond line")

    with SqlResource(db.url, "strict", refuse) as res:
        answer = res.prepare("t-1", b"item-7", later())
    assert answer == PrepareAnswer(False, "no stock for item-7 second line")
    assert db.counter() == 0


def test_a_deadline_already_past_refuses_without_running_the_work(db: Db, resource: SqlResource) -> None:
    answer = resource.prepare("t-late", BUMP, time.monotonic() - 0.001)
    assert not answer.ok and "deadline" in answer.reason
    assert resource.prepared_ids() == []


@pytest.fixture
def row_lock(db: Db) -> Iterator[None]:
    """Another session holds a write lock on counter row 1 (on SQLite: the database's write lock)."""
    conn = db.engine.connect()
    if db.postgres:
        conn.execute(sa.text("UPDATE counter SET n = n + 100 WHERE id = 1"))
    else:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.exec_driver_sql("UPDATE counter SET n = n + 100 WHERE id = 1")
    try:
        yield
    finally:
        if db.postgres:
            conn.rollback()
        else:
            conn.exec_driver_sql("ROLLBACK")
        conn.close()


def test_a_prepare_blocked_on_a_row_lock_refuses_by_its_deadline(
        db: Db, resource: SqlResource, row_lock: None) -> None:
    answer = resource.prepare("t-blocked", BUMP, later(0.3))
    assert not answer.ok
    assert answer.reason.startswith("lock wait timeout: ")
    assert resource.prepared_ids() == []


def test_a_prepare_succeeds_once_the_lock_is_released(db: Db, resource: SqlResource) -> None:
    holder = db.engine.connect()
    if not db.postgres:
        holder.execution_options(isolation_level="AUTOCOMMIT")
        holder.exec_driver_sql("BEGIN IMMEDIATE")
    holder.exec_driver_sql("UPDATE counter SET n = n + 100 WHERE id = 1")
    answers: list[PrepareAnswer] = []
    waiter = threading.Thread(target=lambda: answers.append(resource.prepare("t-waits", BUMP, later(30))))
    waiter.start()
    try:
        if db.postgres:  # the prepare is waiting for the row before the holder lets go
            wait_until(lambda: db.value("SELECT count(*) FROM pg_locks WHERE NOT granted") > 0)
    finally:
        if db.postgres:
            holder.rollback()
        else:
            holder.exec_driver_sql("ROLLBACK")
        holder.close()
    waiter.join(30)
    assert answers == [PrepareAnswer(True)]
    resource.finish("t-waits", Outcome.COMMIT)
    assert db.counter() == 1


def test_a_prepared_transaction_holds_its_row_locks_until_it_is_finished(pg: Db) -> None:
    # (SQLite intents hold no locks: the weaker guarantee, see broker/twopc/sql_intents.py.)
    with SqlResource(pg.url, "shop-db", statements_work) as resource:
        assert resource.prepare("t-first", BUMP, later()).ok
        answer = resource.prepare("t-second", BUMP, later(0.3))
        assert not answer.ok and answer.reason.startswith("lock wait timeout: ")
        resource.finish("t-first", Outcome.COMMIT)
        assert resource.prepare("t-third", BUMP, later()).ok
        resource.finish("t-third", Outcome.COMMIT)
    assert pg.counter() == 2


# ---- idempotence --------------------------------------------------------------------------------------


def test_finish_is_idempotent(db: Db, resource: SqlResource) -> None:
    assert resource.prepare("t-1", BUMP, later()).ok
    assert resource.prepare("t-1", BUMP, later()).ok  # a repeated prepare runs nothing twice
    resource.finish("t-1", Outcome.COMMIT)
    resource.finish("t-1", Outcome.COMMIT)
    assert db.counter() == 1
    assert resource.prepare("t-2", BUMP, later()).ok
    resource.finish("t-2", Outcome.ABORT)
    resource.finish("t-2", Outcome.ABORT)
    assert db.counter() == 1
    for outcome in Outcome:
        resource.finish("never-prepared", outcome)
    assert db.counter() == 1
    assert resource.prepared_ids() == [] and db.prepared_gids() == []


def test_participants_sharing_a_database_see_only_their_own_work(db: Db) -> None:
    with SqlResource(db.url, "a", statements_work) as a, SqlResource(db.url, "a:b", statements_work) as ab:
        assert a.prepare("t", insert_item(10), later()).ok
        assert ab.prepare("t", insert_item(11), later()).ok
        assert a.prepared_ids() == ["t"] and ab.prepared_ids() == ["t"]
        a.finish("t", Outcome.ABORT)
        assert a.prepared_ids() == [] and ab.prepared_ids() == ["t"]
        ab.finish("t", Outcome.COMMIT)
    assert db.labels() == {1: "existing", 11: "new"}


def test_ids_too_long_for_a_gid_still_round_trip(db: Db) -> None:
    participant, tx_id = "ü" * 128, "транзакция-" + "x" * 117
    with SqlResource(db.url, participant, statements_work) as res:
        assert res.prepare(tx_id, BUMP, later()).ok
        assert res.prepared_ids() == [tx_id]
        if db.postgres:
            (gid,) = db.prepared_gids()
            assert len(gid.encode()) <= 199
            assert db.value(f"SELECT count(*) FROM {GID_TABLE}") == 1
        res.finish(tx_id, Outcome.COMMIT)
        assert res.prepared_ids() == []
        assert not res.prepare(tx_id + "-dup", insert_item(1), later()).ok
    assert db.counter() == 1
    if db.postgres:  # neither the finished nor the refused transaction leaves its gid mapping behind
        assert db.value(f"SELECT count(*) FROM {GID_TABLE}") == 0


def test_worker_threads_prepare_and_finish_at_once(db: Db, resource: SqlResource) -> None:
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(8):
            tx_id = f"w{n}-{i}"
            answer = resource.prepare(tx_id, insert_item(1000 + n * 100 + i), later(30))
            if not answer.ok:
                failures.append(answer.reason)
                continue
            resource.finish(tx_id, Outcome.COMMIT if i % 2 == 0 else Outcome.ABORT)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert sorted(db.labels()) == [1, *sorted(1000 + n * 100 + i for n in range(4) for i in range(0, 8, 2))]
    assert resource.prepared_ids() == [] and db.prepared_gids() == []


# ---- SQLite: work that fails at commit time -------------------------------------------------------------


def test_sqlite_work_that_fails_at_commit_time_keeps_its_intent_and_is_retried(
        lite: Db, caplog: pytest.LogCaptureFixture) -> None:
    db = lite
    resource = SqlResource(db.url, "shop-db", statements_work)
    assert resource.prepare("t-late-conflict", insert_item(5), later()).ok
    with db.engine.begin() as conn:  # something else takes the row after the dry run passed
        conn.execute(sa.text("INSERT INTO items (id, label) VALUES (5, 'other')"))
    with pytest.raises(StoreError, match=r"failed at commit time.*UNIQUE constraint failed"):
        resource.finish("t-late-conflict", Outcome.COMMIT)
    assert resource.counters["commit_failed"] == 1
    assert "failed at commit time" in caplog.text
    assert resource.prepared_ids() == ["t-late-conflict"]
    assert db.value(f"SELECT commit_attempts FROM {INTENT_TABLE}") == 1
    assert "UNIQUE constraint failed" in db.value(f"SELECT last_error FROM {INTENT_TABLE}")
    with db.engine.begin() as conn:  # the operator removes the conflict; the retry commits
        conn.execute(sa.text("DELETE FROM items WHERE id = 5"))
    resource.finish("t-late-conflict", Outcome.COMMIT)
    assert db.labels() == {1: "existing", 5: "new"}
    assert resource.prepared_ids() == []
    resource.close()


# ---- a participant process killed after preparing ----------------------------------------------------------

_PREPARE_AND_WAIT = """
import sys, time
from broker.twopc.sql_resource import SqlResource
from broker.twopc.sql_work import statements_work
url, participant, tx_id, payload = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
resource = SqlResource(url, participant, statements_work)
answer = resource.prepare(tx_id, payload, time.monotonic() + 30)
print("prepared" if answer.ok else "refused: " + answer.reason, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("outcome", [Outcome.COMMIT, Outcome.ABORT])
def test_prepared_work_survives_a_killed_participant_process(db: Db, outcome: Outcome) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _PREPARE_AND_WAIT, db.url, "shop-db", "t-crash",
                             BOTH.hex()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line == "prepared", proc.stderr.read().decode() if proc.stderr and not line else line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    assert db.counter() == 0

    with SqlResource(db.url, "shop-db", statements_work) as restarted:
        assert restarted.prepared_ids() == ["t-crash"]
        restarted.finish("t-crash", outcome)
        assert restarted.prepared_ids() == []
    assert db.prepared_gids() == []
    if outcome is Outcome.COMMIT:
        assert db.labels() == {1: "existing", 2: "two"} and db.counter() == 10
    else:
        assert db.labels() == {1: "existing"} and db.counter() == 0


# ---- construction errors ----------------------------------------------------------------------------------


def test_a_server_without_prepared_transactions_is_refused_at_construction() -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} (the shared server) is not set")
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            setting = int(conn.exec_driver_sql("SHOW max_prepared_transactions").scalar() or 0)
    finally:
        engine.dispose()
    if setting > 0:
        pytest.skip(f"the shared server allows {setting} prepared transactions")
    with pytest.raises(StoreError, match="max_prepared_transactions = 0") as raised:
        SqlResource(url, "shop-db", statements_work)
    assert "postgresql.conf" in str(raised.value)
    assert not raised.value.transient


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        SqlResource("sqlite://", "shop-db", statements_work)


def test_an_unsupported_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="mysql"):
        SqlResource("mysql://u@localhost/db", "shop-db", statements_work)


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
