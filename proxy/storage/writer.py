"""The single SQLite writer: the request path enqueues rows; one thread batches and commits them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from proxy.records import MemoryRow, RequestRecord, SessionRecord
from proxy.storage import statements
from proxy.storage.migrations import migrate_path

log = structlog.get_logger(__name__)

# Wake the writer early when this many rows wait, so a burst becomes a few large batches.
BATCH_SIZE = 500
# Past this many unwritten rows (the disk is gone or locked for good) the oldest are dropped,
# so a broken database costs rows rather than all the memory of the proxy.
MAX_PENDING = 100_000

Op = tuple[str, tuple[Any, ...]]
T = TypeVar("T")


class Writer:
    """Owns the one write connection; every enqueue method is sync and never blocks."""

    def __init__(self, path: str, flush_interval: float, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.busy_timeout_ms = busy_timeout_ms
        self._pending: list[Op] = []
        self._conn: sqlite3.Connection | None = None
        # One thread owns the write connection, as in datasette's single writer.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._closing = False
        self.rows_written = 0
        self.rows_failed = 0
        self.rows_dropped = 0

    async def start(self) -> None:
        """Apply migrations, open the write connection and start the writer task."""
        await asyncio.to_thread(migrate_path, self.path)
        self._conn = await self._in_thread(self._connect)
        self._task = asyncio.create_task(self._run(), name="storage-writer")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the writer issues BEGIN/COMMIT itself, one transaction per batch.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Someone running `sqlite3 vidurai.db` may hold the write lock for a moment; wait for it.
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        # NORMAL in WAL mode survives a killed process; only an OS crash may lose the last commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the writer's own thread: the connection is only ever used from there."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Write everything still queued, then close the connection."""
        if self._task is None or self._conn is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None
        if self._pending:
            log.error("storage.unflushed_on_close", rows=len(self._pending))
        await self._in_thread(self._conn.close)
        self._conn = None
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        """Rows enqueued and not yet committed."""
        return len(self._pending)

    def add_request(self, record: RequestRecord) -> None:
        """Queue one `requests` row; the session's running totals are updated with it."""
        self._enqueue("request", statements.request_params(record))

    def upsert_session(self, session: SessionRecord) -> None:
        """Queue the creation of a session, or the update of its liveness and message count."""
        self._enqueue("session", statements.session_params(session))

    def add_memories(self, rows: list[MemoryRow]) -> None:
        """Queue memory rows; a row already stored for its (session, content, position) is skipped.

        One queue entry for them all: a request with 150,000 new turns must not fill the queue and
        push out other tenants' rows.
        """
        if rows:
            self._enqueue("memories", tuple(statements.memory_params(row) for row in rows))

    def add_snapshot(self, session_id: str, state: str, at: float) -> None:
        """Queue a serialized Vidurai state for a session."""
        self._enqueue("snapshot", (session_id, at, state))

    def add_audit(self, session_id: str | None, event: str, detail: dict[str, Any], at: float) -> None:
        """Queue one `audit` row."""
        log.info("audit", audit=event, session_id=session_id, detail=detail)
        self._enqueue("audit", statements.audit_params(session_id, event, detail, at))

    def _enqueue(self, kind: str, params: tuple[Any, ...]) -> None:
        if self._closing and self._task is None:
            log.warning("storage.enqueue_after_close", kind=kind)
            return
        self._pending.append((kind, params))
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            self.rows_dropped += dropped
            log.error("storage.queue_full", dropped=dropped, limit=MAX_PENDING)
        if len(self._pending) >= BATCH_SIZE:
            self._wakeup.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.flush_interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            closing = self._closing
            try:
                written = await self.flush()
                # On close, keep going while rows arrive and the database accepts them.
                while closing and written and self._pending:
                    written = await self.flush()
            except Exception:
                # The writer task must outlive any surprise; the rows are back in the queue.
                log.exception("storage.writer_error")
            if closing:
                return

    async def flush(self) -> bool:
        """Write every queued row in one transaction (a bad row is logged and skipped).

        Returns False when the transaction failed and the rows were put back in the queue.
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> bool:
        if not self._pending or self._conn is None:
            return True
        batch, self._pending = self._pending, []
        try:
            # The whole batch in one hop to the writer thread: one await per batch, not per row.
            failed = await self._in_thread(self._write_batch, self._conn, batch)
        except Exception as exc:
            # The whole transaction failed (locked too long, disk full or gone): keep the rows
            # for the next attempt, ahead of anything queued since.
            self._pending[:0] = batch
            log.error("storage.batch_failed", error=str(exc), error_type=type(exc).__name__, rows=len(batch))
            return False
        self.rows_written += len(batch) - failed
        self.rows_failed += failed
        return True

    @staticmethod
    def _write_batch(conn: sqlite3.Connection, batch: list[Op]) -> int:
        """One transaction; a row at fault is rolled back alone. Returns how many were rejected."""
        try:
            # IMMEDIATE takes the write lock up front, where busy_timeout waits for it cleanly.
            conn.execute("BEGIN IMMEDIATE")
            failed = sum(Writer._apply(conn, kind, params) for kind, params in batch)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        return failed

    @staticmethod
    def _apply(conn: sqlite3.Connection, kind: str, params: tuple[Any, ...]) -> int:
        """Run one row's statements inside a savepoint; return 1 if the row was rejected."""
        conn.execute("SAVEPOINT row")
        try:
            statements.apply(conn, kind, params)
        except sqlite3.OperationalError:
            raise  # the database, not the row (locked, full, I/O): the batch is retried
        except Exception as exc:
            # A constraint, a value SQLite cannot bind: only this row is at fault, so it is
            # rolled back and the rest of the batch is kept.
            conn.execute("ROLLBACK TO row")
            conn.execute("RELEASE row")
            log.error(
                "storage.row_rejected",
                kind=kind,
                error=str(exc),
                error_type=type(exc).__name__,
                row_id=params[0] if params else None,
            )
            return 1
        conn.execute("RELEASE row")
        return 0
