"""Virtual keys and the limits' reads in PostgreSQL (proxy/storage/limits.py says how they are kept)."""

from __future__ import annotations

import psycopg

from proxy.storage.limits import KEY_COLUMNS, LimitsStore, update_assignments
from proxy.storage.postgresql.connections import PostgresThreadConnections
from proxy.storage.postgresql.migrations import migrate


class PostgresLimitsStore(PostgresThreadConnections, LimitsStore):
    ERRORS = (psycopg.Error,)
    INSERT_KEY = (
        "INSERT INTO virtual_keys (id, name, key_hash, tenant, provider, upstream_key_env, "
        "requests_per_minute, tokens_per_minute, budget_usd_per_day, budget_usd_per_month, "
        "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING"
    )
    SELECT_KEYS = f"SELECT key_hash, {KEY_COLUMNS} FROM virtual_keys"
    UPDATE_KEY = (
        f"UPDATE virtual_keys SET {update_assignments('%s')}, updated_at = %s "
        "WHERE name = %s AND revoked_at IS NULL"
    )
    REVOKE_KEY = (
        "UPDATE virtual_keys SET revoked_at = %s, updated_at = %s WHERE name = %s AND revoked_at IS NULL"
    )
    SPEND_SINCE = (
        "SELECT tenant, SUM(cost_usd) FROM requests WHERE created_at >= %s AND tenant IS NOT NULL "
        "GROUP BY tenant HAVING SUM(cost_usd) > 0"
    )
    REJECTIONS_SINCE = (
        "SELECT tenant, substr(error, %s), COUNT(*) FROM requests "
        "WHERE created_at >= %s AND status IN (429, 503) AND error LIKE %s GROUP BY tenant, error"
    )

    def __init__(self, conninfo: str, database: str) -> None:
        super().__init__(conninfo)
        self.database = database

    def _migrate(self) -> None:
        # Its own connection, without the statement timeout: another instance may hold the
        # migrations' lock for as long as its migration takes.
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            migrate(conn)
