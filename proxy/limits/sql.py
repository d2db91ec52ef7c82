"""Every SQL statement the limits need: virtual keys, and spend and rejections read from `requests`.

Kept in one module so it moves to the store's engines in one piece.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

from .keyring import VirtualKey
from .limiter import Limits

_COLUMNS = (
    "id, name, tenant, provider, upstream_key_env, requests_per_minute, tokens_per_minute, "
    "budget_usd_per_day, budget_usd_per_month, created_at, revoked_at"
)
LIMIT_COLUMNS = ("requests_per_minute", "tokens_per_minute", "budget_usd_per_day", "budget_usd_per_month")
# The `error` a rejected request's row carries: "limit: <name>".
REJECTED_PREFIX = "limit: "


@contextlib.contextmanager
def connect(path: str) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode, closed on leaving."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        yield conn
    finally:
        conn.close()


def _key(row: tuple[Any, ...]) -> VirtualKey:
    return VirtualKey(
        id=row[0],
        name=row[1],
        tenant=row[2],
        provider=row[3],
        upstream_key_env=row[4],
        limits=Limits(*row[5:9]),
        created_at=row[9],
        revoked_at=row[10],
    )


def insert_key(conn: sqlite3.Connection, key: VirtualKey, key_hash: str) -> None:
    conn.execute(
        "INSERT INTO virtual_keys (id, name, key_hash, tenant, provider, upstream_key_env, "
        "requests_per_minute, tokens_per_minute, budget_usd_per_day, budget_usd_per_month, "
        "created_at, updated_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            key.id,
            key.name,
            key_hash,
            key.tenant,
            key.provider,
            key.upstream_key_env,
            *key.limits.values(),
            key.created_at,
            key.created_at,
        ),
    )


def list_keys(conn: sqlite3.Connection) -> list[VirtualKey]:
    return [_key(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM virtual_keys ORDER BY name")]


def keys_by_hash(conn: sqlite3.Connection) -> dict[str, VirtualKey]:
    """Every key, revoked ones too (so a revoked key is told apart from an unknown one)."""
    rows = conn.execute(f"SELECT key_hash, {_COLUMNS} FROM virtual_keys")
    return {row[0]: _key(row[1:]) for row in rows}


def update_key(conn: sqlite3.Connection, name: str, changes: dict[str, Any], now: float) -> bool:
    """Set the given columns (limits, upstream_key_env) of a live key; False if there is none."""
    assignments = ", ".join(f"{column} = ?" for column in changes)
    cursor = conn.execute(
        f"UPDATE virtual_keys SET {assignments}, updated_at = ? WHERE name = ? AND revoked_at IS NULL",
        (*changes.values(), now, name),
    )
    return cursor.rowcount == 1


def revoke_key(conn: sqlite3.Connection, name: str, now: float) -> bool:
    cursor = conn.execute(
        "UPDATE virtual_keys SET revoked_at = ?, updated_at = ? WHERE name = ? AND revoked_at IS NULL",
        (now, now, name),
    )
    return cursor.rowcount == 1


def spend_since(conn: sqlite3.Connection, since: float) -> dict[str, float]:
    """US dollars each tenant spent from `since` on, as the requests table recorded it."""
    rows = conn.execute(
        # SUM, not SQLite's TOTAL: SQL both engines speak.
        "SELECT tenant, SUM(cost_usd) FROM requests WHERE created_at >= ? AND tenant IS NOT NULL "
        "GROUP BY tenant HAVING SUM(cost_usd) > 0",
        (since,),
    )
    return {tenant: spend for tenant, spend in rows}


def rejections_since(conn: sqlite3.Connection, since: float) -> list[tuple[str, str, int]]:
    """(tenant, limit name, requests refused) from `since` on."""
    rows = conn.execute(
        "SELECT tenant, substr(error, ?), COUNT(*) FROM requests "
        "WHERE created_at >= ? AND status IN (429, 503) AND error LIKE ? GROUP BY tenant, error",
        (len(REJECTED_PREFIX) + 1, since, REJECTED_PREFIX + "%"),
    )
    return [(tenant, name, count) for tenant, name, count in rows]
