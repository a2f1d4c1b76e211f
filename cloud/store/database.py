"""The store's database: engine set-up for SQLite and PostgreSQL, transactions, migrations, page tokens.

SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout. Its write transactions start with
`BEGIN IMMEDIATE`, so two writers (threads or processes) queue for the lock instead of failing when one
tries to upgrade a read lock; read transactions stay deferred and never block writers. Checkpoints (copying
the WAL back into the database file, with an fsync) run on a background thread rather than inside whichever
commit crosses SQLite's threshold: there they made one request in thirty several times slower than the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from edgewise.cloud.errors import InvalidInputError
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger("edgewise.store")

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 60.0
MAX_PAGE_SIZE = 1000
_WRITE = "edgewise_write"
_MIGRATION_LOCK = 0x65646765  # PostgreSQL advisory lock key that serialises concurrent starts


def normalise_url(url: str) -> sa.URL:
    """The SQLAlchemy URL of `url`; plain `postgresql://` URLs use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"invalid database URL {url!r}: use sqlite:///PATH or postgresql://...") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InvalidInputError("the SQLite database must be a file, e.g. sqlite:///DATA/workspace.db")
    if backend not in ("sqlite", "postgresql"):
        raise InvalidInputError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")
    return parsed


CHECKPOINT_INTERVAL_S = 0.25


def create_engine(url: str) -> sa.Engine:
    parsed = normalise_url(url)
    pool: dict[str, Any] = {"pool_size": 8, "max_overflow": 56, "pool_timeout": BUSY_TIMEOUT_S}
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True, **pool)
    engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}, **pool)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun explicitly, see _sqlite_begin
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch a new database to WAL once. The switch needs the database to itself and SQLite does not wait for
    it, so connections opened at the same moment retry for a while."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection: sa.Connection) -> None:
    writing = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


class Database:
    """An engine and its two kinds of transactions; thread-safe (one pooled connection per transaction)."""

    def __init__(self, *, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(**{_WRITE: True})
        database = engine.url.database if self.dialect == "sqlite" else None
        self._checkpointer = Checkpointer(path=database) if database else None

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self._writer.connect() as conn, conn.begin():
            yield conn

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports `on_conflict_do_nothing` / `on_conflict_do_update` on both databases."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def migrate(self) -> None:
        """Bring the schema to the newest revision, under a lock so concurrent starts do it once."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


class Checkpointer:
    """Folds a SQLite database's WAL back into the database file every CHECKPOINT_INTERVAL_S, on its own thread
    and connection (the sqlite3 module releases the GIL while SQLite works). PASSIVE checkpoints never wait for
    readers or writers, and SQLite itself folds what is left when the last connection closes."""

    def __init__(self, *, path: str, interval: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgewise-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(BUSY_TIMEOUT_S)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        failed = False
        try:
            while not self._stopped.wait(self._interval):
                try:
                    if connection is None:
                        if not Path(self._path + "-wal").exists():
                            continue
                        connection = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    failed = False
                except sqlite3.Error as exc:  # e.g. the disk is full: say so once, keep trying
                    if not failed:
                        log.warning("SQLite checkpoint of %s failed: %s; retrying", self._path, exc)
                    failed = True
        finally:
            if connection is not None:
                connection.close()


def check_page_size(page_size: int) -> int:
    if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size!r}")
    return page_size


def encode_page_token(offset: int) -> str:
    raw = json.dumps({"o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str | None) -> int:
    """The offset a page token stands for (0 for the first page)."""
    if token is None or token == "":
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = data["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"invalid page_token {token[:40]!r}: pass the next_page_token of the previous page unchanged"
        ) from exc
    return offset
