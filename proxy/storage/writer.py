"""The store's writer: the request path queues records; one thread per store batches and commits them.

The thread is the writer's own, not the event loop's: it turns records into parameter tuples
itself, so the request path only appends to a deque. When it falls behind a loop that is never
idle, the loop steps aside for it in short slices (proxy/storage/stepaside.py).

When the database cannot be written (locked, full, read-only, its file deleted, its server
unreachable) the rows wait in a bounded queue, the incident is logged once, `health()` says so,
and the backlog is written when the database accepts writes again. An engine (proxy/storage/sqlite,
proxy/storage/postgresql) supplies the connection and the transaction that writes one batch.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import structlog

from proxy.records import AuditRecord, MemoryRow, MemoryRows, RequestRecord, SessionRecord, SnapshotRecord
from proxy.storage.rows import Record
from proxy.storage.stepaside import CHECK, StepAside
from proxy.storage.store import StorageHealth

log = structlog.get_logger(__name__)

# Wake the writer early when this many rows wait, so a burst becomes a few large batches.
BATCH_SIZE = 500
# Rows per transaction: a backlog after an outage is written in steps this size.
MAX_BATCH = 5000

T = TypeVar("T")


class Writer(abc.ABC):
    """Owns the one write connection; every enqueue method is sync, cheap and never blocks.

    Subclasses (the engines) open the connection and write one batch in one transaction.
    """

    thread_name = "storage-writer"

    def __init__(
        self,
        flush_interval: float,
        *,
        shutdown_timeout: float = 10.0,
        max_queued: int = 100_000,
        store_text: bool = True,
    ) -> None:
        # [storage] store_text = false: no conversation text reaches the database (memories keep their
        # hash, position and importance; snapshots, which are text throughout, are not kept).
        self.store_text = store_text
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.max_queued = max_queued
        self._queue: collections.deque[Record] = collections.deque()
        self._in_flight = 0
        self._lock = threading.Lock()  # the connection: the writer thread and flush() callers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pass = time.monotonic()  # when the writer thread last emptied the queue or failed
        self._step_aside: StepAside | None = None
        self._step_aside_task: asyncio.Task[None] | None = None
        self._closed = False
        self._drop_logged = False
        self.rows_written = 0
        self.rows_failed = 0
        self.rows_dropped = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None

    @abc.abstractmethod
    def describe(self) -> str:
        """The database for logs: a path, or a URL without its password."""

    # --- what an engine supplies (each called in a thread, with the connection lock held) ---

    @abc.abstractmethod
    def _open(self) -> None:
        """Apply pending migrations and open the write connection."""

    @abc.abstractmethod
    def _commit(self, batch: list[Record]) -> int:
        """Write one batch in one transaction (reconnecting first if need be); the number of rows
        rejected for their values. Raises when the database itself refused: the batch is kept."""

    @abc.abstractmethod
    def _expire(self, cutoff: float, now: float) -> list[tuple[str, float]]:
        """Mark expired the sessions last seen before `cutoff`; (id, last_seen_at) of each."""

    @abc.abstractmethod
    def _forget_text(self) -> None:
        """store_text was switched off: conversation text written before goes too."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close the write connection, if open."""

    def _draining(self, remaining: float) -> None:  # noqa: B027 (optional: most engines need nothing)
        """On close, before each try: wait at most `remaining` seconds for the database."""

    # --- lifecycle ---

    async def start(self) -> None:
        """Apply migrations, open the write connection and start the writer thread."""
        await asyncio.to_thread(self._locked, self._open)
        if not self.store_text:
            await asyncio.to_thread(self._locked, self._forget_text)
        self._start_thread()

    def _start_thread(self) -> None:
        self._last_pass = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        self._step_aside = StepAside(self._thread, self._late, rest=self.flush_interval)
        self._step_aside_task = asyncio.get_running_loop().create_task(self._step_aside.run())

    async def close(self) -> None:
        """Write what is queued, waiting at most shutdown_timeout for the database; then close."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._step_aside_task is not None:
            self._step_aside_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._step_aside_task
            self._step_aside_task = None

    def _late(self) -> bool:
        """Rows wait, the database is not failing, and the writer's pass is overdue."""
        if not (self._queue or self._in_flight) or self.failing_since is not None:
            return False
        return time.monotonic() - self._last_pass > self.flush_interval + CHECK

    async def flush(self) -> bool:
        """Write every queued row now; False when the database refused and the rows were kept."""
        return await asyncio.to_thread(self._write_all)

    async def expire_idle(self, cutoff: float, now: float) -> list[tuple[str, float]]:
        """Flush (so this instance's own latest requests count), then expire in one statement the
        sessions no instance has seen since `cutoff`; returns those this call expired."""

        def flush_then_expire() -> list[tuple[str, float]]:
            self._write_all()
            return self._locked(lambda: self._expire(cutoff, now))

        return await asyncio.to_thread(flush_then_expire)

    def _locked(self, body: Callable[[], T]) -> T:
        with self._lock:
            return body()

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
            loop_yielded_s=round(self._step_aside.yielded_s if self._step_aside else 0.0, 3),
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

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._write_all()
            except Exception:  # the thread must outlive any surprise; the rows stay queued
                log.exception("storage.writer_error")
            self._last_pass = time.monotonic()
            if self._step_aside is not None:
                self._step_aside.progress.set()
        self._drain()

    def _drain(self) -> None:
        """On close: keep trying until the queue is empty or shutdown_timeout has passed."""
        deadline = time.monotonic() + self.shutdown_timeout
        while self._queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._lock, contextlib.suppress(Exception):
                self._draining(remaining)
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
            self._disconnect()

    def _write_all(self) -> bool:
        """Batches until the queue is empty; False as soon as the database refuses one.

        Always one _write_next at least: it takes the lock, so a batch the writer thread took off
        the queue and is committing is in the database before flush() returns (an empty queue alone
        said nothing of it: test_session_totals_follow_its_requests failed so in a full-suite run).
        """
        while True:
            if not self._write_next():
                return False
            if not self._queue:
                return True

    def _write_next(self) -> bool:
        with self._lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
            if not batch:
                return True
            self._in_flight = len(batch)
            try:
                failed = self._commit(batch)
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
                database=self.describe(),
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


def log_rejected(record: Record, exc: BaseException) -> None:
    """One line per row the database refused for its values (the rest of its batch is written)."""
    log.error(
        "storage.row_rejected",
        kind=type(record).__name__,
        error=str(exc),
        error_type=type(exc).__name__,
        row_id=getattr(record, "id", None),
    )
