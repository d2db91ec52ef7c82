"""SQLite's reads for the store: /metrics.json, /health's totals, sessions and snapshots, exports.

Each read opens its own read-only connection (aiosqlite runs it in a thread, off the event loop),
so a dashboard query can never take the write lock away from the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from proxy.records import MemoryRow
from proxy.storage import metrics
from proxy.storage.metrics import ActiveSession, Filter, StoredSession
from proxy.storage.store import EXPORT_TABLES, ExportRows, StoreError

_AGGREGATES = """
    COUNT(*) AS requests,
    COALESCE(SUM(error IS NOT NULL OR status >= 400), 0) AS errors,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens,
    COALESCE(SUM(cache_write_tokens), 0) AS cache_write_tokens,
    COALESCE(SUM(tokens_original_est), 0) AS tokens_original_est,
    COALESCE(SUM(tokens_forwarded_est), 0) AS tokens_forwarded_est,
    COALESCE(SUM(tokens_saved), 0) AS tokens_saved,
    TOTAL(cost_usd) AS cost_usd,
    TOTAL(cost_saved_usd) AS cost_saved_usd,
    COALESCE(SUM(cost_usd IS NULL AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)), 0)
        AS unpriced_requests,
    AVG(duration_ms) AS avg_duration_ms,
    AVG(overhead_ms) AS avg_overhead_ms
"""


def requests_where(where: Filter) -> tuple[str, list[Any]]:
    """A condition on `requests` and its parameters ("1" when nothing is filtered)."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.session is not None:
        conditions.append("session_id IN (SELECT id FROM sessions WHERE id = ? OR label = ?)")
        params += [where.session, where.session]
    if where.tag is not None:
        conditions.append("EXISTS (SELECT 1 FROM json_each(requests.tags) WHERE key = ? AND value = ?)")
        params += list(where.tag)
    return " AND ".join(conditions) or "1", params


def sessions_where(where: Filter) -> tuple[str, list[Any]]:
    """A condition on `sessions`: the named session, the sessions with a tagged request."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.session is not None:
        conditions.append("(id = ? OR label = ?)")
        params += [where.session, where.session]
    if where.tag is not None:
        tagged, tag_params = requests_where(Filter(tag=where.tag))
        conditions.append(f"id IN (SELECT session_id FROM requests WHERE {tagged})")
        params += tag_params
    return " AND ".join(conditions) or "1", params


def _read_only_uri(path: str) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


@contextlib.asynccontextmanager
async def _connect(path: str) -> AsyncIterator[aiosqlite.Connection]:
    connection = aiosqlite.connect(_read_only_uri(path), uri=True)
    try:
        await connection
    except BaseException:
        # When opening fails (no database yet, no permission), aiosqlite stops its worker thread
        # without waiting for it (omnilib/aiosqlite#389). A loop that closes first, as the UI's
        # does on Ctrl-C, then gets "Event loop is closed" as a thread traceback on stderr.
        await asyncio.to_thread(connection._thread.join)
        raise
    try:
        connection.row_factory = sqlite3.Row
        await connection.execute("PRAGMA busy_timeout = 5000")
        yield connection
    finally:
        await connection.close()


async def _totals(conn: aiosqlite.Connection, where: Filter) -> dict[str, Any]:
    condition, params = requests_where(where)
    rows = await conn.execute_fetchall(f"SELECT {_AGGREGATES} FROM requests WHERE {condition}", params)
    result = metrics.aggregate(next(iter(rows)))
    condition, params = sessions_where(where)
    rows = await conn.execute_fetchall(
        "SELECT COUNT(*) AS sessions, COALESCE(SUM(expired_at IS NULL), 0) AS active FROM sessions "
        f"WHERE {condition}",
        params,
    )
    counts = next(iter(rows))
    result["sessions"] = counts["sessions"]
    result["active_sessions"] = counts["active"]
    return result


async def totals(path: str) -> dict[str, Any]:
    """The `totals` object of /metrics.json, for /health."""
    async with _connect(path) as conn:
        return await _totals(conn, Filter())


async def metrics_json(path: str, now: float | None = None, where: Filter | None = None) -> dict[str, Any]:
    """Everything GET /metrics.json returns (schema in proxy/storage/metrics.py)."""
    now = time.time() if now is None else now
    where = Filter() if where is None else where
    condition, params = requests_where(where)
    async with _connect(path) as conn:
        result: dict[str, Any] = {"generated_at": round(now, 3), "totals": await _totals(conn, where)}
        if where != Filter():
            result["filter"] = where.echo()
        rows = await conn.execute_fetchall(
            f"SELECT provider, {_AGGREGATES} FROM requests WHERE {condition} "
            "GROUP BY provider ORDER BY requests DESC, provider",
            params,
        )
        result["by_provider"] = [metrics.aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT provider, model, {_AGGREGATES} FROM requests WHERE {condition} GROUP BY provider, model "
            "ORDER BY cost_usd DESC, requests DESC, provider, model",
            params,
        )
        result["by_model"] = [metrics.aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT tag.key AS key, tag.value AS value, {_AGGREGATES} "
            f"FROM requests, json_each(requests.tags) AS tag WHERE {condition} "
            "GROUP BY tag.key, tag.value ORDER BY cost_usd DESC, requests DESC, tag.key, tag.value",
            params,
        )
        result["by_tag"] = [{"tag": f"{row['key']}={row['value']}", **metrics.aggregate(row)} for row in rows]
        session_condition, session_params = sessions_where(where)
        rows = await conn.execute_fetchall(
            f"SELECT {metrics.SESSION_COLUMNS} FROM sessions "
            f"WHERE {session_condition} ORDER BY tokens_saved DESC, last_seen_at DESC, id LIMIT ?",
            (*session_params, metrics.TOP_SESSIONS),
        )
        result["top_sessions"] = [metrics.with_savings_pct(row) for row in rows]
        # id breaks ties, not rowid: the order is the same on every engine.
        rows = await conn.execute_fetchall(
            f"SELECT * FROM requests WHERE {condition} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, metrics.RECENT_REQUESTS),
        )
        result["recent_requests"] = [metrics.request(row) for row in rows]
        result["per_minute"] = await _per_minute(conn, now, where)
    return result


async def _per_minute(conn: aiosqlite.Connection, now: float, where: Filter) -> list[dict[str, Any]]:
    window = metrics.minutes(now)
    condition, params = requests_where(where)
    rows = await conn.execute_fetchall(
        f"SELECT CAST(created_at / 60 AS INTEGER) * 60 AS minute, {_AGGREGATES} FROM requests "
        f"WHERE created_at >= ? AND created_at < ? AND {condition} GROUP BY minute",
        (window.start, window.stop, *params),
    )
    found = {row["minute"]: metrics.aggregate(row) for row in rows}
    empty = metrics.aggregate(
        next(iter(await conn.execute_fetchall(f"SELECT {_AGGREGATES} FROM requests WHERE 0")))
    )
    return metrics.per_minute(found, empty, now)


async def active_sessions(
    path: str, since: float | None = None, *, states: bool = True
) -> list[ActiveSession]:
    """Sessions not expired (and seen at or after `since`), least recently seen first, each with its
    latest snapshot; `states=False` leaves the snapshot's text out (`state` is then "" when there is one)."""
    state = "sn.state" if states else "CASE WHEN sn.id IS NULL THEN NULL ELSE '' END"
    async with _connect(path) as conn:
        rows = await conn.execute_fetchall(
            "SELECT s.id, s.tenant, s.created_at, s.last_seen_at, s.messages, s.expired_at, s.label, "
            f"       {state} AS state, sn.created_at AS snapshot_at "
            "FROM sessions s LEFT JOIN snapshots sn ON sn.id = "
            "    (SELECT id FROM snapshots WHERE session_id = s.id ORDER BY id DESC LIMIT 1) "
            "WHERE s.expired_at IS NULL AND s.last_seen_at >= ? ORDER BY s.last_seen_at, s.id",
            (since if since is not None else float("-inf"),),
        )
    return [
        ActiveSession(session=metrics.session_record(row), state=row["state"], snapshot_at=row["snapshot_at"])
        for row in rows
    ]


async def stored_session(path: str, session_id: str) -> StoredSession | None:
    """One session's row and whether a snapshot of it exists; None for a session never stored."""
    async with _connect(path) as conn:
        rows = list(
            await conn.execute_fetchall(
                "SELECT id, tenant, created_at, last_seen_at, messages, expired_at, label, "
                "EXISTS (SELECT 1 FROM snapshots WHERE session_id = sessions.id) AS has_snapshot "
                "FROM sessions WHERE id = ?",
                (session_id,),
            )
        )
    if not rows:
        return None
    return StoredSession(metrics.session_record(rows[0]), bool(rows[0]["has_snapshot"]))


async def latest_snapshot(path: str, session_id: str) -> str | None:
    """The newest snapshot of one session's memory, or None."""
    async with _connect(path) as conn:
        rows = list(
            await conn.execute_fetchall(
                "SELECT state FROM snapshots WHERE session_id = ? ORDER BY id DESC LIMIT 1", (session_id,)
            )
        )
    return str(rows[0]["state"]) if rows else None


async def session_memories(path: str, session_id: str) -> list[MemoryRow]:
    """The memories stored for one session, in conversation order."""
    async with _connect(path) as conn:
        rows = await conn.execute_fetchall(
            "SELECT session_id, position, role, kind, importance, content, content_sha, created_at "
            "FROM memories WHERE session_id = ? ORDER BY position, id",
            (session_id,),
        )
    return [MemoryRow(**dict(row)) for row in rows]


def _export_connection(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise StoreError(f"database not found: {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
        conn.execute("PRAGMA query_only = ON")
        # A running proxy may be committing; wait for it rather than failing.
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not set(EXPORT_TABLES) <= tables:
        conn.close()
        raise StoreError(f"{path} is not a Vidurai Proxy database (no requests/sessions tables)")
    return conn


def export_query(
    table: str, since: float | None, until: float | None, where: Filter
) -> tuple[str, list[Any]]:
    """The SELECT for one export; every filter is a bound parameter."""
    time_column = EXPORT_TABLES[table]
    condition, params = requests_where(where) if table == "requests" else sessions_where(where)
    conditions = [condition]
    if since is not None:
        conditions.append(f"{time_column} >= ?")
        params.append(since)
    if until is not None:
        conditions.append(f"{time_column} < ?")
        params.append(until)
    return f"SELECT * FROM {table} WHERE {' AND '.join(conditions)} ORDER BY {time_column}, id", params


@contextlib.contextmanager
def export_rows(
    path: str, table: str, since: float | None, until: float | None, where: Filter
) -> Iterator[ExportRows]:
    """The table's matching rows, streamed as SQLite steps through them."""
    conn = _export_connection(path)
    try:
        sql, params = export_query(table, since, until, where)
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None
        yield ExportRows([d[0] for d in cursor.description], _stepping(cursor, path))
    finally:
        conn.close()


def _stepping(cursor: sqlite3.Cursor, path: str) -> Iterator[tuple[Any, ...]]:
    try:
        yield from cursor
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
