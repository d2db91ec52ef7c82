"""PostgreSQL's reads for the store: the queries of proxy/storage/sqlite/reader.py in PostgreSQL's
dialect, shaped by the same functions (proxy/storage/metrics.py) so both engines return equal JSON.

Text tie-breakers sort with COLLATE "C" and NULLs first, as SQLite does; sums of integer columns
are cast back to BIGINT (PostgreSQL's SUM(bigint) is NUMERIC).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from proxy.records import MemoryRow
from proxy.storage import metrics
from proxy.storage.metrics import ActiveSession, Filter, StoredSession

Conn = psycopg.AsyncConnection[dict[str, Any]]

_AGGREGATES = """
    COUNT(*) AS requests,
    COUNT(*) FILTER (WHERE error IS NOT NULL OR status >= 400) AS errors,
    COALESCE(SUM(input_tokens), 0)::BIGINT AS input_tokens,
    COALESCE(SUM(output_tokens), 0)::BIGINT AS output_tokens,
    COALESCE(SUM(cache_read_tokens), 0)::BIGINT AS cache_read_tokens,
    COALESCE(SUM(cache_write_tokens), 0)::BIGINT AS cache_write_tokens,
    COALESCE(SUM(tokens_original_est), 0)::BIGINT AS tokens_original_est,
    COALESCE(SUM(tokens_forwarded_est), 0)::BIGINT AS tokens_forwarded_est,
    COALESCE(SUM(tokens_saved), 0)::BIGINT AS tokens_saved,
    COALESCE(SUM(cost_usd), 0)::DOUBLE PRECISION AS cost_usd,
    COALESCE(SUM(cost_saved_usd), 0)::DOUBLE PRECISION AS cost_saved_usd,
    COUNT(*) FILTER (WHERE cost_usd IS NULL AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL))
        AS unpriced_requests,
    AVG(duration_ms) AS avg_duration_ms,
    AVG(overhead_ms) AS avg_overhead_ms
"""
_TAGGED = "EXISTS (SELECT 1 FROM jsonb_each_text(requests.tags::jsonb) t WHERE t.key = %s AND t.value = %s)"


def requests_where(where: Filter) -> tuple[str, list[Any]]:
    """A condition on `requests` and its parameters ("TRUE" when nothing is filtered)."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.session is not None:
        conditions.append("session_id IN (SELECT id FROM sessions WHERE id = %s OR label = %s)")
        params += [where.session, where.session]
    if where.tag is not None:
        conditions.append(_TAGGED)
        params += list(where.tag)
    return " AND ".join(conditions) or "TRUE", params


def sessions_where(where: Filter) -> tuple[str, list[Any]]:
    """A condition on `sessions`: the named session, the sessions with a tagged request."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.session is not None:
        conditions.append("(id = %s OR label = %s)")
        params += [where.session, where.session]
    if where.tag is not None:
        conditions.append(f"id IN (SELECT session_id FROM requests WHERE {_TAGGED})")
        params += list(where.tag)
    return " AND ".join(conditions) or "TRUE", params


async def _all(conn: Conn, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def totals(conn: Conn, where: Filter | None = None) -> dict[str, Any]:
    where = Filter() if where is None else where
    condition, params = requests_where(where)
    result = metrics.aggregate(
        (await _all(conn, f"SELECT {_AGGREGATES} FROM requests WHERE {condition}", params))[0]
    )
    condition, params = sessions_where(where)
    (counts,) = await _all(
        conn,
        "SELECT COUNT(*) AS sessions, COUNT(*) FILTER (WHERE expired_at IS NULL) AS active FROM sessions "
        f"WHERE {condition}",
        params,
    )
    result["sessions"] = counts["sessions"]
    result["active_sessions"] = counts["active"]
    return result


async def metrics_json(conn: Conn, now: float | None = None, where: Filter | None = None) -> dict[str, Any]:
    """Everything GET /metrics.json returns (schema in proxy/storage/metrics.py)."""
    now = time.time() if now is None else now
    where = Filter() if where is None else where
    condition, params = requests_where(where)
    # One snapshot of the database for every part, as SQLite's read transaction gives.
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        result: dict[str, Any] = {"generated_at": round(now, 3), "totals": await totals(conn, where)}
        if where != Filter():
            result["filter"] = where.echo()
        rows = await _all(
            conn,
            f"SELECT provider, {_AGGREGATES} FROM requests WHERE {condition} "
            'GROUP BY provider ORDER BY requests DESC, provider COLLATE "C"',
            params,
        )
        result["by_provider"] = [metrics.aggregate(row) for row in rows]
        rows = await _all(
            conn,
            f"SELECT provider, model, {_AGGREGATES} FROM requests WHERE {condition} GROUP BY provider, model "
            'ORDER BY cost_usd DESC, requests DESC, provider COLLATE "C", model COLLATE "C" NULLS FIRST',
            params,
        )
        result["by_model"] = [metrics.aggregate(row) for row in rows]
        rows = await _all(
            conn,
            f"SELECT tag.key AS key, tag.value AS value, {_AGGREGATES} "
            f"FROM requests, jsonb_each_text(requests.tags::jsonb) AS tag WHERE {condition} "
            'GROUP BY tag.key, tag.value ORDER BY cost_usd DESC, requests DESC, tag.key COLLATE "C", '
            'tag.value COLLATE "C"',
            params,
        )
        result["by_tag"] = [{"tag": f"{row['key']}={row['value']}", **metrics.aggregate(row)} for row in rows]
        session_condition, session_params = sessions_where(where)
        rows = await _all(
            conn,
            f"SELECT {metrics.SESSION_COLUMNS} FROM sessions WHERE {session_condition} "
            'ORDER BY tokens_saved DESC, last_seen_at DESC, id COLLATE "C" LIMIT %s',
            (*session_params, metrics.TOP_SESSIONS),
        )
        result["top_sessions"] = [metrics.with_savings_pct(row) for row in rows]
        rows = await _all(
            conn,
            f"SELECT * FROM requests WHERE {condition} "
            'ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT %s',
            (*params, metrics.RECENT_REQUESTS),
        )
        result["recent_requests"] = [metrics.request(row) for row in rows]
        window = metrics.minutes(now)
        rows = await _all(
            conn,
            f"SELECT (floor(created_at / 60) * 60)::BIGINT AS minute, {_AGGREGATES} FROM requests "
            f"WHERE created_at >= %s AND created_at < %s AND {condition} GROUP BY minute",
            (window.start, window.stop, *params),
        )
        found = {row["minute"]: metrics.aggregate(row) for row in rows}
        empty = metrics.aggregate((await _all(conn, f"SELECT {_AGGREGATES} FROM requests WHERE FALSE"))[0])
        result["per_minute"] = metrics.per_minute(found, empty, now)
    return result


async def active_sessions(
    conn: Conn, since: float | None = None, *, states: bool = True
) -> list[ActiveSession]:
    state = "sn.state" if states else "CASE WHEN sn.id IS NULL THEN NULL ELSE '' END"
    rows = await _all(
        conn,
        "SELECT s.id, s.tenant, s.created_at, s.last_seen_at, s.messages, s.expired_at, s.label, "
        f"       {state} AS state, sn.created_at AS snapshot_at "
        "FROM sessions s LEFT JOIN snapshots sn ON sn.id = "
        "    (SELECT id FROM snapshots WHERE session_id = s.id ORDER BY id DESC LIMIT 1) "
        'WHERE s.expired_at IS NULL AND s.last_seen_at >= %s ORDER BY s.last_seen_at, s.id COLLATE "C"',
        (since if since is not None else float("-inf"),),
    )
    return [
        ActiveSession(session=metrics.session_record(row), state=row["state"], snapshot_at=row["snapshot_at"])
        for row in rows
    ]


async def stored_session(conn: Conn, session_id: str) -> StoredSession | None:
    rows = await _all(
        conn,
        "SELECT id, tenant, created_at, last_seen_at, messages, expired_at, label, "
        "EXISTS (SELECT 1 FROM snapshots WHERE session_id = sessions.id) AS has_snapshot "
        "FROM sessions WHERE id = %s",
        (session_id,),
    )
    return StoredSession(metrics.session_record(rows[0]), bool(rows[0]["has_snapshot"])) if rows else None


async def latest_snapshot(conn: Conn, session_id: str) -> str | None:
    rows = await _all(
        conn, "SELECT state FROM snapshots WHERE session_id = %s ORDER BY id DESC LIMIT 1", (session_id,)
    )
    return str(rows[0]["state"]) if rows else None


async def session_memories(conn: Conn, session_id: str) -> list[MemoryRow]:
    rows = await _all(
        conn,
        "SELECT session_id, position, role, kind, importance, content, content_sha, created_at "
        "FROM memories WHERE session_id = %s ORDER BY position, id",
        (session_id,),
    )
    return [MemoryRow(**row) for row in rows]


def export_query(
    table: str, time_column: str, since: float | None, until: float | None, where: Filter
) -> tuple[str, list[Any]]:
    """The SELECT for one export; every filter is a bound parameter."""
    condition, params = requests_where(where) if table == "requests" else sessions_where(where)
    conditions = [condition]
    if since is not None:
        conditions.append(f"{time_column} >= %s")
        params.append(since)
    if until is not None:
        conditions.append(f"{time_column} < %s")
        params.append(until)
    return (
        f'SELECT * FROM {table} WHERE {" AND ".join(conditions)} ORDER BY {time_column}, id COLLATE "C"',
        params,
    )
