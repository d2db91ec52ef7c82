"""The PostgreSQL engine: several proxy instances share one database (`[storage] database =
postgresql://...`). psycopg 3: a sync connection in the writer thread (as SQLite's), a few async
connections for the reads, and a sync one for `vidurai-proxy export` (bench/pg_drivers.py and the
README say why this driver).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import structlog
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from proxy.records import MemoryRow
from proxy.storage import rows
from proxy.storage.metrics import ActiveSession, Filter, StoredSession
from proxy.storage.postgresql import batches, reader
from proxy.storage.postgresql.migrations import migrate
from proxy.storage.postgresql.statements import EXPIRE_IDLE, INSERT_AUDIT
from proxy.storage.postgresql.summaries import PostgresSummaryStore
from proxy.storage.rows import Record
from proxy.storage.store import EXPORT_TABLES, ExportRows, StoreError
from proxy.storage.writer import Writer, log_rejected

if TYPE_CHECKING:
    from proxy.storage.postgresql.limits import PostgresLimitsStore

log = structlog.get_logger(__name__)
T = TypeVar("T")

# libpq connection parameters: an unreachable server must not hold the writer thread, or a
# dashboard's read, for the OS's TCP timeouts (minutes). connect_timeout bounds the connection in
# seconds; tcp_user_timeout (ms) and the keepalives bound a connection whose server went silent
# mid-query (its host gone, a network cut) to about 10 s, after which it counts as failed.
CONNECTION: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
}
# Idle read connections kept open: a session's first request here, /health and the dashboards read
# at once without each paying for a new connection (a few ms against a local server).
READ_CONNECTIONS = 4
# Errors a row's values cause (a NUL byte in text, a number out of range, a constraint, a value
# psycopg cannot send); any other error is the server's (unreachable, read-only, out of space, a
# table missing) and keeps the batch for a retry.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, OverflowError, TypeError, ValueError)


def _rows_at_fault(exc: Exception) -> bool:
    # psycopg raises ProgrammingError without an SQLSTATE for a Python value it cannot adapt (the
    # row's fault); with one (42xxx: a missing column or table) the fault is the database's.
    if isinstance(exc, psycopg.ProgrammingError):
        return exc.sqlstate is None
    return isinstance(exc, ROW_ERRORS)


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


class PostgresStore(Writer):
    """The store on a PostgreSQL database."""

    thread_name = "postgresql-writer"

    def __init__(self, url: str, flush_interval: float = 0.5, **writer: Any) -> None:
        super().__init__(flush_interval, **writer)
        self.url = url
        self._conninfo = make_conninfo(url, **CONNECTION)
        self._conn: psycopg.Connection[Any] | None = None
        self._idle: list[psycopg.AsyncConnection[dict[str, Any]]] = []
        self._pooling = True
        self._summaries = PostgresSummaryStore(self._conninfo)
        self._limits: PostgresLimitsStore | None = None

    def describe(self) -> str:
        return without_password(self.url)

    def summaries(self) -> PostgresSummaryStore:
        return self._summaries

    def limits(self) -> PostgresLimitsStore:
        if self._limits is None:
            from proxy.storage.postgresql.limits import PostgresLimitsStore  # the limits' records, when used

            self._limits = PostgresLimitsStore(self._conninfo, self.describe())
        return self._limits

    async def start(self) -> None:
        try:
            await super().start()
        except psycopg.OperationalError as exc:
            # The server is down or unreachable: serve anyway. Rows queue (bounded) and the
            # migrations run with the first write that reaches it; /health says degraded meanwhile.
            self._failed(exc)
            self._start_thread()

    async def close(self) -> None:
        await super().close()
        self._pooling = False  # a read after close (a last dashboard refresh) closes its connection
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        await asyncio.to_thread(self._summaries.close)
        if self._limits is not None:
            await asyncio.to_thread(self._limits.close)

    # --- writes (the writer thread, with the connection lock held) --------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        # autocommit: each batch is one explicit transaction (conn.transaction()), nothing left open.
        return psycopg.connect(self._conninfo, autocommit=True)

    def _open(self) -> None:
        conn = self._connect()
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _forget_text(self) -> None:
        conn = self._connection()
        with conn.transaction():
            memories = conn.execute("UPDATE memories SET content = '' WHERE content != ''").rowcount
            snapshots = conn.execute("DELETE FROM snapshots").rowcount
        summaries = self._summaries.forget()
        if memories or snapshots or summaries:
            # The old row versions stay in the table files until a vacuum reclaims them.
            conn.execute("VACUUM memories, snapshots, summaries, fold_digests")
            log.info("storage.text_forgotten", memories=memories, snapshots=snapshots, summaries=summaries)

    def _expire(self, cutoff: float, now: float) -> list[tuple[str, float]]:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            expired = [(row[0], row[1]) for row in cur.execute(EXPIRE_IDLE, (now, cutoff)).fetchall()]
            if expired:
                cur.executemany(INSERT_AUDIT, rows.expired_audits(expired, now))
        return expired

    def _commit(self, batch: list[Record]) -> int:
        """One transaction for the batch; a row at fault has it redone row by row, each in a
        savepoint, so only that row is lost. A deadlock with another instance is retried once, and
        so is a connection the server dropped since the last batch (a restart, a failover)."""
        reused = self._conn is not None
        conn = self._connection()
        for attempt in (1, 2):
            try:
                with conn.transaction():
                    batches.write(conn, rows.split(batch))
                return 0
            except psycopg.errors.DeadlockDetected:
                if attempt == 2:
                    raise
            except psycopg.OperationalError:
                if attempt == 2 or not (reused and conn.broken):
                    raise
                conn = self._connection()  # a new connection: the batch was rolled back with the old
            except Exception as exc:
                if not _rows_at_fault(exc):
                    raise
                break
        failed = 0
        with conn.transaction():
            for record in batch:
                try:
                    with conn.transaction():
                        batches.write(conn, rows.split([record]))
                except Exception as exc:
                    if not _rows_at_fault(exc):
                        raise
                    log_rejected(record, exc)
                    failed += 1
        return failed

    # --- reads --------------------------------------------------------------------------------------

    async def _reading(self, read: Callable[[reader.Conn], Awaitable[T]]) -> T:
        """Run one read on an idle connection, or a new one; a kept connection the server dropped
        meanwhile (a restart) is replaced and the read tried once more."""
        if self._idle:
            conn = self._idle.pop()
            try:
                result = await read(conn)
            except psycopg.OperationalError:
                dropped = conn.broken
                await conn.close()
                if not dropped:
                    raise
            else:
                await self._release(conn)
                return result
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        try:
            return await read(conn)
        finally:
            await self._release(conn)

    async def _release(self, conn: reader.Conn) -> None:
        if conn.broken or conn.closed or not self._pooling or len(self._idle) >= READ_CONNECTIONS:
            await conn.close()
        else:
            self._idle.append(conn)

    async def metrics_json(self, now: float | None = None, where: Filter | None = None) -> dict[str, Any]:
        return await self._reading(lambda conn: reader.metrics_json(conn, now, where))

    async def totals(self) -> dict[str, Any]:
        return await self._reading(reader.totals)

    async def stored_session(self, session_id: str) -> StoredSession | None:
        return await self._reading(lambda conn: reader.stored_session(conn, session_id))

    async def latest_snapshot(self, session_id: str) -> str | None:
        return await self._reading(lambda conn: reader.latest_snapshot(conn, session_id))

    async def session_memories(self, session_id: str) -> list[MemoryRow]:
        return await self._reading(lambda conn: reader.session_memories(conn, session_id))

    async def active_sessions(
        self, since: float | None = None, *, states: bool = True
    ) -> list[ActiveSession]:
        return await self._reading(lambda conn: reader.active_sessions(conn, since, states=states))

    @contextlib.contextmanager
    def export_rows(
        self, table: str, since: float | None, until: float | None, where: Filter
    ) -> Iterator[ExportRows]:
        try:
            conn = psycopg.connect(self._conninfo)
        except psycopg.Error as exc:
            raise StoreError(f"cannot read {self.describe()}: {exc}".strip()) from None
        try:
            found = conn.execute(
                "SELECT to_regclass('requests') IS NOT NULL AND to_regclass('sessions') IS NOT NULL"
            ).fetchone()
            if not found or not found[0]:
                raise StoreError(
                    f"{self.describe()} is not a Vidurai Proxy database (no requests/sessions tables)"
                )
            sql, params = reader.export_query(table, EXPORT_TABLES[table], since, until, where)
            # A named cursor lives on the server: rows arrive in chunks, never all in memory.
            with conn.cursor(name="vidurai_export") as cursor:
                try:
                    cursor.execute(sql, params)
                    first = cursor.fetchmany(1)  # the description is known once the first rows came
                except psycopg.Error as exc:
                    raise StoreError(f"cannot read {self.describe()}: {exc}") from None
                columns = [column.name for column in cursor.description or ()]
                yield ExportRows(columns, _stepping(first, cursor, self.describe()))
        finally:
            conn.close()


def _stepping(
    first: list[tuple[Any, ...]], cursor: psycopg.Cursor[Any], database: str
) -> Iterator[tuple[Any, ...]]:
    yield from first
    try:
        yield from cursor
    except psycopg.Error as exc:
        raise StoreError(f"cannot read {database}: {exc}") from None
