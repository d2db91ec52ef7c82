"""The single SQLite writer: the request path queues records; one thread batches and commits them.

The thread is the writer's own, not the event loop's: it commits every flush_interval however busy
the loop is, and turns records into parameter tuples itself, so the request path only appends to
a deque. When the database cannot be written (locked, full, read-only, its file deleted) the rows
wait in a bounded queue, the incident is logged once, `health()` says so, and the backlog is
written when the database accepts writes again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import threading
import time
from typing import Any

import attrs
import structlog

from proxy.records import AuditRecord, MemoryRow, MemoryRows, RequestRecord, SessionRecord, SnapshotRecord
from proxy.storage import batches
from proxy.storage.migrations import migrate_path
from proxy.storage.statements import Record

log = structlog.get_logger(__name__)

# Wake the writer early when this many rows wait, so a burst becomes a few large batches.
BATCH_SIZE = 500
# Rows per transaction: a backlog after an outage is written in steps this size.
MAX_BATCH = 5000
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


@attrs.frozen
class StorageHealth:
    """What /health and /metrics say about the writer."""

    writable: bool  # False from the first failed write until the next successful one
    queued: int  # rows waiting to be written
    written: int
    rejected: int  # rows the database refused for their values (logged one by one)
    dropped: int  # rows lost at the queue limit, or not written before a stop
    last_error: str | None
    failing_since: float | None  # unix seconds


class Writer:
    """Owns the one write connection; every enqueue method is sync, cheap and never blocks."""

    def __init__(
        self,
        path: str,
        flush_interval: float,
        *,
        shutdown_timeout: float = 10.0,
        max_queued: int = 100_000,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        store_text: bool = True,
    ) -> None:
        self.path = path
        # [storage] store_text = false: no conversation text reaches the disk (memories keep their
        # hash, position and importance; snapshots, which are text throughout, are not kept).
        self.store_text = store_text
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.max_queued = max_queued
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: collections.deque[Record] = collections.deque()
        self._in_flight = 0
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._lock = threading.Lock()  # the connection: the writer thread and flush() callers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drop_logged = False
        self.rows_written = 0
        self.rows_failed = 0
        self.rows_dropped = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None

    async def start(self) -> None:
        """Apply migrations, open the write connection and start the writer thread."""
        await asyncio.to_thread(self._open)
        if not self.store_text:
            await asyncio.to_thread(self._forget_text)
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write what is queued, waiting at most shutdown_timeout for the database; then close."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def flush(self) -> bool:
        """Write every queued row now; False when the database refused and the rows were kept."""
        return await asyncio.to_thread(self._write_all)

    @property
    def queued(self) -> int:
        """Rows enqueued and not yet committed."""
        return len(self._queue) + self._in_flight

    def health(self) -> StorageHealth:
        return StorageHealth(
            writable=self.failing_since is None,
            queued=self.queued,
            written=self.rows_written,
            rejected=self.rows_failed,
            dropped=self.rows_dropped,
            last_error=self.last_error,
            failing_since=self.failing_since,
        )

    # --- the request path's side -----------------------------------------------------------------

    def add_request(self, record: RequestRecord) -> None:
        """Queue one `requests` row; its session's running totals are updated with it."""
        self._enqueue(record)

    def upsert_session(self, session: SessionRecord) -> None:
        """Queue the creation of a session, or the update of its liveness, message count or expiry."""
        self._enqueue(session)

    def add_memories(self, rows: list[MemoryRow]) -> None:
        """Queue memory rows; a row already stored for its (session, content, position) is skipped.

        One queue entry for them all (MemoryRows): however many turns a request adds, it takes one
        place in the queue.
        """
        if rows:
            self._enqueue(
                MemoryRows(tuple(rows if self.store_text else (attrs.evolve(r, content="") for r in rows)))
            )

    def add_snapshot(self, session_id: str, state: str, at: float) -> None:
        """Queue a serialized Vidurai state for a session (dropped when text is not stored)."""
        if self.store_text:
            self._enqueue(SnapshotRecord(session_id, state, at))

    def add_audit(self, session_id: str | None, event: str, detail: dict[str, Any], at: float) -> None:
        """Queue one `audit` row."""
        log.info("audit", audit=event, session_id=session_id, detail=detail)
        self._enqueue(AuditRecord(session_id, event, detail, at))

    def _enqueue(self, record: Record) -> None:
        queue = self._queue
        if self._closed:
            self.rows_dropped += 1
            log.warning("storage.enqueue_after_close", kind=type(record).__name__)
            return
        while len(queue) >= self.max_queued:
            # The database has refused writes for a while: the oldest rows go, not the proxy's memory.
            with contextlib.suppress(IndexError):  # the writer thread may have just taken them
                queue.popleft()
                self.rows_dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                log.error(
                    "storage.queue_full",
                    limit=self.max_queued,
                    error=self.last_error,
                    hint="dropping the oldest rows until the database accepts writes again",
                )
        queue.append(record)
        if len(queue) >= BATCH_SIZE and not self._wake.is_set():
            self._wake.set()

    # --- the writer thread -----------------------------------------------------------------------

    def _forget_text(self) -> None:
        """store_text was switched off: text written before goes too, overwritten, not just unlinked."""
        with self._lock:
            conn = self._connection()
            conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable
            conn.execute("BEGIN IMMEDIATE")
            memories = conn.execute("UPDATE memories SET content = '' WHERE content != ''").rowcount
            snapshots = conn.execute("DELETE FROM snapshots").rowcount
            conn.execute("COMMIT")
            # The old pages also sit in the WAL until a checkpoint copies the new ones over them.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if memories or snapshots:
            log.info("storage.text_forgotten", memories=memories, snapshots=snapshots)

    def _open(self) -> sqlite3.Connection:
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
        conn = self._open()
        log.warning("storage.reopened", database=self.path, hint="the database file had been removed")
        return conn

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._write_all()
            except Exception:  # the thread must outlive any surprise; the rows stay queued
                log.exception("storage.writer_error")
        self._drain()

    def _drain(self) -> None:
        """On close: keep trying until the queue is empty or shutdown_timeout has passed."""
        deadline = time.monotonic() + self.shutdown_timeout
        while self._queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._conn is not None:
                with self._lock, contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout = {int(min(remaining, 1.0) * 1000)}")
            if not self._write_all():
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        self._closed = True
        unwritten = len(self._queue)
        if unwritten:
            self._queue.clear()
            self.rows_dropped += unwritten
            log.error(
                "storage.unwritten_on_close",
                rows=unwritten,
                dropped_before=self.rows_dropped - unwritten,
                waited_s=self.shutdown_timeout,
                error=self.last_error,
            )
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _write_all(self) -> bool:
        """Batches until the queue is empty; False as soon as the database refuses one."""
        while self._queue:
            if not self._write_next():
                return False
        return True

    def _write_next(self) -> bool:
        with self._lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
            if not batch:
                return True
            self._in_flight = len(batch)
            try:
                failed = self._commit(self._connection(), batch)
            except Exception as exc:
                queue.extendleft(reversed(batch))  # ahead of anything queued since
                self._failed(exc)
                return False
            finally:
                self._in_flight = 0
            self.rows_written += len(batch) - failed
            self.rows_failed += failed
            if self.failing_since is not None:
                self._recovered()
            return True

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:  # once per incident, not per row or retry
            self.failing_since = time.time()
            log.error(
                "storage.unwritable",
                error=self.last_error,
                queued=self.queued,
                database=self.path,
                hint="rows are kept in memory and written when the database accepts writes again",
            )

    def _recovered(self) -> None:
        assert self.failing_since is not None
        log.warning(
            "storage.recovered",
            after_s=round(time.time() - self.failing_since, 1),
            dropped=self.rows_dropped,
            queued=self.queued,
        )
        self.failing_since = None
        self._drop_logged = False

    @classmethod
    def _commit(cls, conn: sqlite3.Connection, batch: list[Record]) -> int:
        """One transaction, one executemany per table; returns how many rows were rejected.

        A row at fault (rare) fails its table's executemany: the batch is then redone row by row,
        each in a savepoint, so only that row is lost.
        """
        try:
            cls._transaction(conn, lambda: batches.write(conn, batches.split(batch)))
            return 0
        except ROW_ERRORS:
            pass
        failed = 0

        def one_by_one() -> None:
            nonlocal failed
            failed = sum(cls._apply(conn, record) for record in batch)

        cls._transaction(conn, one_by_one)
        return failed

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Any) -> None:
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

    @staticmethod
    def _apply(conn: sqlite3.Connection, record: Record) -> int:
        """Write one record inside a savepoint; return 1 if the database rejected its values."""
        conn.execute("SAVEPOINT row")
        try:
            batches.write(conn, batches.split([record]))
        except ROW_ERRORS as exc:
            conn.execute("ROLLBACK TO row")
            conn.execute("RELEASE row")
            log.error(
                "storage.row_rejected",
                kind=type(record).__name__,
                error=str(exc),
                error_type=type(exc).__name__,
                row_id=getattr(record, "id", None),
            )
            return 1
        conn.execute("RELEASE row")
        return 0
