"""The SQLite engine: the embedded default, one file shared by the processes that open it.

One write connection (the writer thread's), WAL so readers never wait for it, and read-only
connections for every read (proxy/storage/sqlite/reader.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from proxy.records import MemoryRow
from proxy.storage import rows
from proxy.storage.metrics import ActiveSession, Filter, StoredSession
from proxy.storage.rows import Record
from proxy.storage.sqlite import batches, reader
from proxy.storage.sqlite.migrations import migrate_path
from proxy.storage.sqlite.statements import EXPIRE_IDLE, INSERT_AUDIT
from proxy.storage.sqlite.summaries import SqliteSummaryStore
from proxy.storage.store import ExportRows
from proxy.storage.writer import Writer, log_rejected

if TYPE_CHECKING:
    from proxy.storage.sqlite.limits import SqliteLimitsStore

log = structlog.get_logger(__name__)

# How long one write waits for a lock someone else holds; then the rows wait for the next try.
BUSY_TIMEOUT_MS = 1000
# Errors that a row's values cause (a constraint, a value SQLite cannot bind); any other error
# is the database's (locked, full, I/O, read-only) and keeps the whole batch for a retry.
ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
    TypeError,
    ValueError,
)


class DatabaseGone(Exception):
    """The database file was deleted or replaced under the open connection."""


class SqliteStore(Writer):
    """The store on a SQLite file."""

    thread_name = "sqlite-writer"

    def __init__(
        self, path: str, flush_interval: float = 0.5, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, **writer: Any
    ):
        super().__init__(flush_interval, **writer)
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._summaries = SqliteSummaryStore(path, busy_timeout_ms)
        self._limits: SqliteLimitsStore | None = None

    def describe(self) -> str:
        return self.path

    def summaries(self) -> SqliteSummaryStore:
        return self._summaries

    def limits(self) -> SqliteLimitsStore:
        if self._limits is None:
            from proxy.storage.sqlite.limits import SqliteLimitsStore  # the limits' records, when used

            self._limits = SqliteLimitsStore(self.path, self.busy_timeout_ms)
        return self._limits

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self._summaries.close)
        if self._limits is not None:
            await asyncio.to_thread(self._limits.close)

    # --- writes (the writer thread, with the connection lock held) --------------------------------

    def _open(self) -> None:
        self._reopen()

    def _reopen(self) -> sqlite3.Connection:
        """Migrate the file and open the write connection (on first start and after the file went away)."""
        migrate_path(self.path)
        # isolation_level=None: the writer issues BEGIN/COMMIT itself, one transaction per batch.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # NORMAL in WAL mode survives a killed process; only an OS crash may lose the last commit.
            conn.execute("PRAGMA synchronous = NORMAL")
            stat = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        self._conn, self._identity = conn, (stat.st_dev, stat.st_ino)
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The open connection, checked to still be the file at `path` (reopened when it can be)."""
        if self._conn is not None:
            try:
                stat = os.stat(self.path)
                gone = (stat.st_dev, stat.st_ino) != self._identity
            except FileNotFoundError:
                gone = True
            if not gone:
                return self._conn
            # Commits to an unlinked file would succeed and be lost: stop using it.
            self._conn.close()
            self._conn = None
            if not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
                raise DatabaseGone(f"the directory of {self.path} was deleted")
            conn = self._reopen()
            log.warning("storage.reopened", database=self.path, hint="the database file had been removed")
            return conn
        return self._reopen()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _draining(self, remaining: float) -> None:
        if self._conn is not None:
            self._conn.execute(f"PRAGMA busy_timeout = {int(min(remaining, 1.0) * 1000)}")

    def _forget_text(self) -> None:
        conn = self._connection()
        conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable
        conn.execute("BEGIN IMMEDIATE")
        memories = conn.execute("UPDATE memories SET content = '' WHERE content != ''").rowcount
        snapshots = conn.execute("DELETE FROM snapshots").rowcount
        conn.execute("COMMIT")
        summaries = self._summaries.forget()
        # The old pages also sit in the WAL until a checkpoint copies the new ones over them.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if memories or snapshots or summaries:
            log.info("storage.text_forgotten", memories=memories, snapshots=snapshots, summaries=summaries)

    def _expire(self, cutoff: float, now: float) -> list[tuple[str, float]]:
        conn = self._connection()
        expired: list[tuple[str, float]] = []

        def update() -> None:
            expired.extend((row[0], row[1]) for row in conn.execute(EXPIRE_IDLE, (now, cutoff)).fetchall())
            conn.executemany(INSERT_AUDIT, rows.expired_audits(expired, now))

        _transaction(conn, update)
        return expired

    def _commit(self, batch: list[Record]) -> int:
        """One transaction, one executemany per table; returns how many rows were rejected.

        A row at fault (rare) fails its table's executemany: the batch is then redone row by row,
        each in a savepoint, so only that row is lost.
        """
        conn = self._connection()
        try:
            _transaction(conn, lambda: batches.write(conn, rows.split(batch)))
            return 0
        except ROW_ERRORS:
            pass
        failed = 0

        def one_by_one() -> None:
            nonlocal failed
            failed = sum(_apply(conn, record) for record in batch)

        _transaction(conn, one_by_one)
        return failed

    # --- reads (each on a read-only connection of its own) ----------------------------------------

    async def metrics_json(self, now: float | None = None, where: Filter | None = None) -> dict[str, Any]:
        return await reader.metrics_json(self.path, now, where)

    async def totals(self) -> dict[str, Any]:
        return await reader.totals(self.path)

    async def stored_session(self, session_id: str) -> StoredSession | None:
        return await reader.stored_session(self.path, session_id)

    async def latest_snapshot(self, session_id: str) -> str | None:
        return await reader.latest_snapshot(self.path, session_id)

    async def session_memories(self, session_id: str) -> list[MemoryRow]:
        return await reader.session_memories(self.path, session_id)

    async def active_sessions(
        self, since: float | None = None, *, states: bool = True
    ) -> list[ActiveSession]:
        return await reader.active_sessions(self.path, since, states=states)

    @contextlib.contextmanager
    def export_rows(
        self, table: str, since: float | None, until: float | None, where: Filter
    ) -> Iterator[ExportRows]:
        with reader.export_rows(self.path, table, since, until, where) as found:
            yield found


def _transaction(conn: sqlite3.Connection, body: Callable[[], None]) -> None:
    try:
        # IMMEDIATE takes the write lock up front, where busy_timeout waits for it cleanly.
        conn.execute("BEGIN IMMEDIATE")
        body()
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, record: Record) -> int:
    """Write one record inside a savepoint; return 1 if the database rejected its values."""
    conn.execute("SAVEPOINT row")
    try:
        batches.write(conn, rows.split([record]))
    except ROW_ERRORS as exc:
        conn.execute("ROLLBACK TO row")
        conn.execute("RELEASE row")
        log_rejected(record, exc)
        return 1
    conn.execute("RELEASE row")
    return 0
