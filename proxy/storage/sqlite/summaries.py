"""Chunk summaries and fold decisions in SQLite: read and written at once, visible to every process
sharing the file (the SummaryStore protocol of proxy/storage/store.py).

Not through the writer's queue: a fold decision must be in the database before the next request of
its conversation (on this instance or another) asks for it, and both kinds of row are rare (one per
chunk, one per fold). Each thread keeps its own connection: compress() reads from the worker threads,
the summarizer writes from its own.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence

SELECT_SUMMARIES = "SELECT chunk_key, summary FROM summaries WHERE chunk_key IN ({})"
INSERT_SUMMARY = (
    "INSERT INTO summaries (chunk_key, session_id, model, summary, created_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (chunk_key) DO NOTHING"
)
SELECT_FOLD = "SELECT summarized FROM fold_digests WHERE fold_key = ?"
INSERT_FOLD = (
    "INSERT INTO fold_digests (fold_key, summarized, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (fold_key) DO NOTHING"
)
# SQLite binds at most 32766 parameters; a request folds far fewer chunks than this.
KEYS_PER_QUERY = 500


class SqliteSummaryStore:
    """The `summaries` and `fold_digests` tables of one database file (migrated by its store)."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored summary of each of these chunks that has one."""
        found: dict[str, str] = {}
        for at in range(0, len(keys), KEYS_PER_QUERY):
            part = keys[at : at + KEYS_PER_QUERY]
            sql = SELECT_SUMMARIES.format(", ".join("?" * len(part)))
            found.update(self._conn().execute(sql, part).fetchall())
        return found

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
        return tuple(json.loads(row[0]))

    def forget(self) -> int:
        """[storage] store_text is off: summaries are conversation text, so none is kept (their
        pages zeroed, as the store's own forgetting does); how many summaries went."""
        conn = self._conn()
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            summaries = conn.execute("DELETE FROM summaries").rowcount
            conn.execute("DELETE FROM fold_digests")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return summaries

    def close(self) -> None:
        """Close every thread's connection (once nothing reads or writes any more)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()
