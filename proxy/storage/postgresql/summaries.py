"""Chunk summaries and fold decisions in PostgreSQL: read and written at once, visible to every
instance sharing the database (the SummaryStore protocol of proxy/storage/store.py).

Not through the writer's queue: a fold decision must be in the database before the next request of
its conversation (on this instance or another) asks for it, and both kinds of row are rare (one per
chunk, one per fold). Each thread keeps its own sync connection (psycopg connections are not shared
between threads here): compress() reads from the worker threads, the summarizer writes from its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

SELECT_SUMMARIES = "SELECT chunk_key, summary FROM summaries WHERE chunk_key = ANY(%s)"
INSERT_SUMMARY = (
    "INSERT INTO summaries (chunk_key, session_id, model, summary, created_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (chunk_key) DO NOTHING"
)
SELECT_FOLD = "SELECT summarized FROM fold_digests WHERE fold_key = %s"
INSERT_FOLD = (
    "INSERT INTO fold_digests (fold_key, summarized, created_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (fold_key) DO NOTHING"
)
# compress() waits for these reads with the session's lock held, and then fails open (the request
# goes out uncompressed): a server that is slow to answer a primary-key lookup must not hold a
# request for longer than this.
STATEMENT_TIMEOUT_MS = 2000


class PostgresSummaryStore:
    """The `summaries` and `fold_digests` tables of one database (migrated by its store)."""

    def __init__(self, url: str, connect_timeout: int) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            conn.close()
            conn = None
        if conn is None:
            # autocommit: each statement is its own transaction, nothing is left open between calls.
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout)
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored summary of each of these chunks that has one."""
        rows = self._conn().execute(SELECT_SUMMARIES, (list(keys),)).fetchall()
        return {chunk_key: summary for chunk_key, summary in rows}

    def add_summary(
        self, chunk_key: str, session_id: str | None, model: str, summary: str, at: float
    ) -> None:
        """Keep a chunk's summary; the first one stored for a chunk stays."""
        self._conn().execute(INSERT_SUMMARY, (chunk_key, session_id, model, summary, at))

    def fold(self, fold_key: str) -> tuple[str, ...] | None:
        """The chunks whose digest is their summary in this fold, if the fold was decided."""
        row = self._conn().execute(SELECT_FOLD, (fold_key,)).fetchone()
        return None if row is None else tuple(json.loads(row[0]))

    def decide_fold(self, fold_key: str, summarized: Sequence[str], at: float) -> tuple[str, ...]:
        """Record this fold's choice unless one is recorded already; the recorded one is returned, so
        two instances deciding the same fold at once both forward the first one's."""
        conn = self._conn()
        conn.execute(INSERT_FOLD, (fold_key, json.dumps(list(summarized)), at))
        row = conn.execute(SELECT_FOLD, (fold_key,)).fetchone()
        assert row is not None  # inserted now or before; rows are only deleted with store_text off
        return tuple(json.loads(row[0]))

    def forget(self) -> int:
        """[storage] store_text is off: summaries are conversation text, so none is kept (the store
        vacuums the tables after); how many summaries went."""
        conn = self._conn()
        with conn.transaction():
            summaries = conn.execute("DELETE FROM summaries").rowcount
            conn.execute("DELETE FROM fold_digests")
        return summaries

    def close(self) -> None:
        """Close every thread's connection (once nothing reads or writes any more)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()
