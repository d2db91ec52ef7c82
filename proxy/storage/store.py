"""The store: the one object (behind `app[STORE]`) through which the proxy writes and reads storage.

Two engines implement it: SQLite (the embedded default, a file path in `[storage] database`) and
PostgreSQL (`[storage] database = postgresql://...`, for several instances sharing one database).
Writes are sync, cheap enqueues that never block the request path; one writer thread per store
batches them into transactions. Reads are async and give fleet-wide figures: whichever instance
answers reads the same shared tables. SQL dialect stays inside each engine's package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from proxy.config import StorageConfig
from proxy.records import MemoryRow, RequestRecord, SessionRecord
from proxy.storage.metrics import ActiveSession, Filter, StoredSession

if TYPE_CHECKING:
    from proxy.storage.limits import LimitsStore

# Tables `vidurai-proxy export` reads, with the time column --since/--until filter on.
EXPORT_TABLES = {
    "requests": "created_at",
    # A session belongs to a period if it was active in it, however long ago it started.
    "sessions": "last_seen_at",
}
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


class StoreError(Exception):
    """A database that cannot be read, said in one line a person can act on."""


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
    loop_yielded_s: float = 0.0  # event-loop time given to a late writer (proxy/storage/writer.py)


@attrs.frozen
class ExportRows:
    """An export's column names and its rows, streamed (never all in memory)."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


class SummaryStore(Protocol):
    """Model-written chunk summaries and fold decisions (summarizer = model): sync, read and written
    at once on a connection of the calling thread's, so a fold decided on one instance is what every
    instance forwards from its next request (proxy/compression/summaries.py)."""

    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored summary of each of these chunks that has one."""

    def add_summary(
        self, chunk_key: str, session_id: str | None, model: str, summary: str, at: float
    ) -> None:
        """Keep a chunk's summary; the first one stored for a chunk stays."""

    def fold(self, fold_key: str) -> tuple[str, ...] | None:
        """The chunks whose digest is their summary in this fold, if the fold was decided."""

    def decide_fold(self, fold_key: str, summarized: Sequence[str], at: float) -> tuple[str, ...]:
        """Record this fold's choice unless one is recorded already; returns the recorded one."""

    def forget(self) -> int:
        """Delete every summary and fold decision ([storage] store_text = false); how many summaries."""

    def close(self) -> None:
        """Close every thread's connection."""


class Store(Protocol):
    """What the proxy, its maintenance, the terminal UI and export need from storage."""

    store_text: bool

    # --- lifecycle ---
    async def start(self) -> None:
        """Apply pending migrations, open the write connection and start the writer thread."""

    async def close(self) -> None:
        """Write what is queued (waiting at most shutdown_timeout), then close every connection."""

    # --- writes: sync, cheap, never block; committed in batches by the writer thread ---
    def add_request(self, record: RequestRecord) -> None: ...
    def upsert_session(self, session: SessionRecord) -> None: ...
    def add_memories(self, rows: list[MemoryRow]) -> None: ...
    def add_snapshot(self, session_id: str, state: str, at: float) -> None: ...
    def add_audit(self, session_id: str | None, event: str, detail: dict[str, Any], at: float) -> None: ...
    async def flush(self) -> bool:
        """Write every queued row now; False when the database refused and the rows were kept."""

    def health(self) -> StorageHealth: ...

    @property
    def queued(self) -> int: ...

    async def expire_idle(self, cutoff: float, now: float) -> list[tuple[str, float]]:
        """Flush, then mark expired (at `now`) every session no instance has seen since `cutoff`, with
        its "expired" audit row in the same transaction; returns (id, last_seen_at) of those this
        call expired (each session is expired by one call, whichever instance makes it)."""

    def summaries(self) -> SummaryStore:
        """The summaries and fold decisions (usable once started; closed with the store)."""

    def limits(self) -> LimitsStore:
        """Virtual keys, and the spend and refusals the limits read (sync, on the calling thread's
        connection; closed with the store). Usable before start() for `vidurai-proxy keys`."""

    # --- reads: async, fleet-wide ---
    async def metrics_json(self, now: float | None = None, where: Filter | None = None) -> dict[str, Any]:
        """GET /metrics.json (schema in proxy/storage/metrics.py)."""

    async def totals(self) -> dict[str, Any]:
        """The `totals` object of /metrics.json, for /health."""

    async def stored_session(self, session_id: str) -> StoredSession | None:
        """One session's row and whether it has a snapshot (None if never stored)."""

    async def latest_snapshot(self, session_id: str) -> str | None: ...
    async def session_memories(self, session_id: str) -> list[MemoryRow]: ...
    async def active_sessions(
        self, since: float | None = None, *, states: bool = True
    ) -> list[ActiveSession]:
        """Sessions not expired, least recently seen first, with their latest snapshot."""

    def export_rows(
        self, table: str, since: float | None, until: float | None, where: Filter
    ) -> contextlib.AbstractContextManager[ExportRows]:
        """The rows `vidurai-proxy export` writes, read on a connection of its own (sync: a CLI)."""

    def describe(self) -> str:
        """The database for logs and the terminal UI: a path, or a URL without its password."""


def is_postgresql(database: str) -> bool:
    return database.startswith(POSTGRESQL_SCHEMES)


def open_store(storage: StorageConfig | str, **overrides: Any) -> Store:
    """The engine `[storage] database` names: a postgresql:// URL, or else a SQLite file path
    (a bare database string: the writer's defaults, for readers such as `vidurai-proxy export`).

    Nothing is opened yet: reads work at once, writes after `await store.start()`.
    """
    settings: dict[str, Any] = {}
    if isinstance(storage, str):
        database = storage
    else:
        database = storage.database
        settings = {
            "flush_interval": storage.flush_interval,
            "shutdown_timeout": storage.shutdown_timeout,
            "max_queued": storage.max_queued_rows,
            "store_text": storage.store_text,
        }
    settings.update(overrides)
    if is_postgresql(database):
        from proxy.storage.postgresql import PostgresStore  # psycopg is imported only when used

        return PostgresStore(database, **settings)
    from proxy.storage.sqlite import SqliteStore

    return SqliteStore(database, **settings)
