"""The summaries and fold decisions in PostgreSQL (proxy/storage/summaries.py says how they are
kept): psycopg 3 sync connections, one per thread, autocommit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from proxy.storage.summaries import ThreadSummaryStore

SELECT_SUMMARIES = "SELECT chunk_key, summary FROM summaries WHERE chunk_key = ANY(%s)"
# compress() waits for these reads with the session's lock held, and then fails open (the request
# goes out uncompressed): a server slow to answer a primary-key lookup must not hold a request for
# longer than this.
STATEMENT_TIMEOUT_MS = 2000


class PostgresSummaryStore(ThreadSummaryStore):
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

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self.conninfo = conninfo  # the store's, with its connect and TCP timeouts

    def _connect(self) -> psycopg.Connection[Any]:
        # autocommit: each statement is its own transaction, nothing is left open between calls.
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return conn

    def _usable(self, conn: Any) -> bool:
        return not (conn.closed or conn.broken)  # a restarted server: the next call reconnects

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
