"""A private PostgreSQL server for the tests that need prepared transactions.

The server these machines start has ``max_prepared_transactions = 0`` (no
``PREPARE TRANSACTION``), and the tests must not reconfigure it. So the
session-scoped ``private_postgres`` fixture runs its own: ``initdb`` into a
temporary directory, then ``postgres`` on a free loopback port with its unix
socket in that directory and ``max_prepared_transactions = 20`` (fsync off:
the tests kill clients, never this server). PostgreSQL refuses to run as
root, so under root both run as the ``postgres`` user (``Popen(user=...)``,
which is what ``runuser -u postgres --`` does, minus the extra process that
would stand between us and the server's signals) in a directory it owns. The
server stops (fast shutdown) and the directory goes at the end of the session.

``postgres_database`` gives each test its own database, dropped afterwards
(with any prepared transaction a failed test left in it).

Binaries: ``$EDGEBUS_TEST_POSTGRES_BIN`` if set, else
``/usr/lib/postgresql/15/bin``, else the newest other version there, else
``initdb`` on PATH. None found: the tests skip, or fail when
``EDGEBUS_TEST_POSTGRES_URL`` is set (CI sets it and must not pass by
skipping; ``.ci/run`` installs the package).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.brokers import free_port

if TYPE_CHECKING:  # imported where used, so that conftest loads on a machine without psycopg
    import psycopg

__all__ = [
    "PrivatePostgres",
    "find_postgres_bin",
    "postgres_database",
    "private_postgres",
    "require_postgres_bin",
]

POSTGRES_ENV = "EDGEBUS_TEST_POSTGRES_URL"
BIN_ENV = "EDGEBUS_TEST_POSTGRES_BIN"
SERVER_USER = "postgres"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_VERSIONS = Path("/usr/lib/postgresql")

# Servers started and not yet stopped, so that even an interrupted run leaves none behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
    _LIVE.clear()


def _has_server(bindir: Path) -> bool:
    programs = (bindir / "initdb", bindir / "postgres")
    return all(program.is_file() and os.access(program, os.X_OK) for program in programs)


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (15 preferred), or None."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    candidates.append(_VERSIONS / "15" / "bin")
    if _VERSIONS.is_dir():
        versions = sorted((p for p in _VERSIONS.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
        candidates.extend(p / "bin" for p in versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    return next((c for c in candidates if _has_server(c)), None)


def _why_not(message: str) -> None:
    if os.environ.get(POSTGRES_ENV):
        pytest.fail(f"{POSTGRES_ENV} is set but {message}", pytrace=False)
    pytest.skip(message)


def require_postgres_bin() -> Path:
    """The server binaries, or skip the test (fail it when ``EDGEBUS_TEST_POSTGRES_URL`` is set)."""
    bindir = find_postgres_bin()
    if bindir is None:
        _why_not(f"no PostgreSQL server binaries (initdb, postgres) in ${BIN_ENV}, {_VERSIONS}/*/bin "
                 "or on PATH (apt-get install postgresql)")
    assert bindir is not None
    return bindir


class PrivatePostgres:
    """One PostgreSQL server in ``workdir``: superuser ``postgres`` (trust), loopback ``port``."""

    def __init__(self, bindir: Path, workdir: Path, *, max_prepared_transactions: int = 20) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.logfile = workdir / "postgres.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.max_prepared_transactions = max_prepared_transactions
        self.proc: subprocess.Popen[bytes] | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        self._extra_groups: list[int] | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses root: run as the postgres user, in a directory it owns
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                _why_not(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as")
            os.chown(workdir, account.pw_uid, account.pw_gid)
            self._uid, self._gid, self._extra_groups = account.pw_uid, account.pw_gid, []

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database``."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg connection in autocommit mode (CREATE DATABASE, COMMIT PREPARED need one)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user="postgres", dbname=database,
                               autocommit=True, connect_timeout=5)

    def _run(self, *args: str) -> None:
        result = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.workdir,
                                capture_output=True, timeout=120, check=False,
                                env={**os.environ, "LC_ALL": "C"}, user=self._uid, group=self._gid,
                                extra_groups=self._extra_groups)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        import psycopg

        if not self.datadir.exists():
            self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync")
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.workdir}",
                 "-c", f"max_prepared_transactions={self.max_prepared_transactions}",
                 "-c", "max_connections=50", "-c", "shared_buffers=32MB", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C"}, user=self._uid, group=self._gid,
                extra_groups=self._extra_groups)
        _LIVE.add(self.proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres not ready after {READY_TIMEOUT} s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (clients cut off, prepared transactions kept on disk)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        _LIVE.discard(proc)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def create_database(self) -> str:
        from psycopg import sql

        name = f"edgebus_test_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, first rolling back what is still prepared in it (DROP refuses otherwise)."""
        from psycopg import sql

        with self.connect(name) as conn:
            gids = [row[0] for row in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")]
            for gid in gids:
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server with prepared transactions on, for the whole session."""
    bindir = require_postgres_bin()
    if importlib.util.find_spec("psycopg") is None:
        _why_not("psycopg (3) is not installed (pip install -e '.[dev]')")
    workdir = Path(tempfile.mkdtemp(prefix="edgebus-pg-"))
    try:
        server = PrivatePostgres(bindir, workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_database(private_postgres: PrivatePostgres) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh database on the private server, dropped after the test."""
    name = private_postgres.create_database()
    try:
        yield private_postgres.url(name)
    finally:
        private_postgres.drop_database(name)
