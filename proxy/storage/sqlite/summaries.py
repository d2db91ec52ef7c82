"""The summaries and fold decisions in SQLite (proxy/storage/summaries.py says how they are kept)."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.storage.sqlite.connections import SqliteThreadConnections
from proxy.storage.summaries import ThreadSummaryStore

SELECT_SUMMARIES = "SELECT chunk_key, summary FROM summaries WHERE chunk_key IN ({})"
# SQLite binds at most 32766 parameters; a request folds far fewer chunks than this.
KEYS_PER_QUERY = 500


class SqliteSummaryStore(SqliteThreadConnections, ThreadSummaryStore):
    """The tables in one SQLite file."""

    INSERT_SUMMARY = (
        "INSERT INTO summaries (chunk_key, session_id, model, summary, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (chunk_key) DO NOTHING"
    )
    SELECT_FOLD = "SELECT summarized FROM fold_digests WHERE fold_key = ?"
    INSERT_FOLD = (
        "INSERT INTO fold_digests (fold_key, summarized, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (fold_key) DO NOTHING"
    )

    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for at in range(0, len(keys), KEYS_PER_QUERY):
            part = keys[at : at + KEYS_PER_QUERY]
            sql = SELECT_SUMMARIES.format(", ".join("?" * len(part)))
            found.update(self._conn().execute(sql, part).fetchall())
        return found

    def forget(self) -> int:
        # Freed pages zeroed, as the store's own forgetting does (it checkpoints the WAL after).
        conn = self._conn()
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            summaries: int = conn.execute("DELETE FROM summaries").rowcount
            conn.execute("DELETE FROM fold_digests")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return summaries
