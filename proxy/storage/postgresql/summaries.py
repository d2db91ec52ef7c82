"""The summaries and fold decisions in PostgreSQL (proxy/storage/summaries.py says how they are
kept): psycopg 3 sync connections, one per thread, autocommit."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.storage.postgresql.connections import PostgresThreadConnections
from proxy.storage.summaries import ThreadSummaryStore

SELECT_SUMMARIES = "SELECT chunk_key, summary FROM summaries WHERE chunk_key = ANY(%s)"


class PostgresSummaryStore(PostgresThreadConnections, ThreadSummaryStore):
    """The tables in one PostgreSQL database."""

    INSERT_SUMMARY = (
        "INSERT INTO summaries (chunk_key, session_id, model, summary, created_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (chunk_key) DO NOTHING"
    )
    SELECT_FOLD = "SELECT summarized FROM fold_digests WHERE fold_key = %s"
    INSERT_FOLD = (
        "INSERT INTO fold_digests (fold_key, summarized, created_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (fold_key) DO NOTHING"
    )

    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        rows = self._conn().execute(SELECT_SUMMARIES, (list(keys),)).fetchall()
        return {chunk_key: summary for chunk_key, summary in rows}

    def forget(self) -> int:
        # The store vacuums the tables after.
        conn = self._conn()
        with conn.transaction():
            summaries: int = conn.execute("DELETE FROM summaries").rowcount
            conn.execute("DELETE FROM fold_digests")
        return summaries
