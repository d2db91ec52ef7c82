"""Each thread's connection to a SQLite file, for the stores read and written at once."""

from __future__ import annotations

import sqlite3

from proxy.storage.connections import ThreadConnections


class SqliteThreadConnections(ThreadConnections):
    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        super().__init__()
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        return conn
