"""Virtual keys and the limits' reads in SQLite (proxy/storage/limits.py says how they are kept)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from proxy.storage.limits import KEY_COLUMNS, LimitsStore, update_assignments
from proxy.storage.sqlite.connections import SqliteThreadConnections
from proxy.storage.sqlite.migrations import migrate_path


class SqliteLimitsStore(SqliteThreadConnections, LimitsStore):
    ERRORS = (sqlite3.Error,)
    INSERT_KEY = (
        "INSERT INTO virtual_keys (id, name, key_hash, tenant, provider, upstream_key_env, "
        "requests_per_minute, tokens_per_minute, budget_usd_per_day, budget_usd_per_month, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
    )
    SELECT_KEYS = f"SELECT key_hash, {KEY_COLUMNS} FROM virtual_keys"
    UPDATE_KEY = (
        f"UPDATE virtual_keys SET {update_assignments('?')}, updated_at = ? "
        "WHERE name = ? AND revoked_at IS NULL"
    )
    REVOKE_KEY = (
        "UPDATE virtual_keys SET revoked_at = ?, updated_at = ? WHERE name = ? AND revoked_at IS NULL"
    )
    SPEND_SINCE = (
        "SELECT tenant, SUM(cost_usd) FROM requests WHERE created_at >= ? AND tenant IS NOT NULL "
        "GROUP BY tenant HAVING SUM(cost_usd) > 0"
    )
    REJECTIONS_SINCE = (
        "SELECT tenant, substr(error, ?), COUNT(*) FROM requests "
        "WHERE created_at >= ? AND status IN (429, 503) AND error LIKE ? GROUP BY tenant, error"
    )

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        super().__init__(path, busy_timeout_ms)
        self.database = path

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # A connection per call (opening one costs ~0.1 ms; these calls come seconds apart): one
        # kept per thread was seen, in test_virtual_key_is_swapped_for_the_real_key, to go on
        # reading a snapshot from before another process's revoke.
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        migrate_path(self.path)
