"""Each thread's connection to a PostgreSQL database, for the stores read and written at once:
psycopg 3 sync connections, autocommit."""

from __future__ import annotations

from typing import Any

import psycopg

from proxy.storage.connections import ThreadConnections

# These reads wait with a request held (compress() with its session's lock, an unknown virtual key's
# reload) and then fail open: a server slow to answer a primary-key lookup must not hold a request
# for longer than this.
STATEMENT_TIMEOUT_MS = 2000


class PostgresThreadConnections(ThreadConnections):
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
