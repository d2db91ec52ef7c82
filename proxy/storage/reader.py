"""Read queries for /metrics.json, /health and session restore, each on its own connection.

`GET /metrics.json` schema (times are unix seconds, costs US dollars, tokens integers):

    {
      "generated_at": 1767225600.0,
      "totals": {AGG, "sessions": 12, "active_sessions": 3},
      "by_provider": [{"provider": "anthropic", AGG}, ...],          # most requests first
      "by_model": [{"provider": "anthropic", "model": "claude-...", AGG}, ...],  # highest cost first
      "top_sessions": [SESSION, ...],          # 10 sessions with the most tokens saved
      "recent_requests": [REQUEST, ...],       # the 50 newest requests, newest first
      "per_minute": [{"minute": 1767222060, AGG}, ...]  # last 60 minutes, oldest first, zero-filled
    }

AGG: "requests", "errors" (status >= 400 or an error recorded), "input_tokens", "output_tokens",
"cache_read_tokens", "cache_write_tokens" (usage as upstream reported it; input excludes the
cache tiers), "tokens_original_est", "tokens_forwarded_est", "tokens_saved" (estimates before
and after compression), "savings_pct" (100 * tokens_saved / tokens_original_est, 0 when
nothing was estimated), "cost_usd", "cost_saved_usd" (sums over priced requests),
"unpriced_requests" (requests with usage but no known price, left out of cost_usd),
"avg_duration_ms", "avg_overhead_ms" (null when no request had one).

SESSION: "id", "tenant", "created_at", "last_seen_at", "expired_at" (null while active),
"messages", "requests", "input_tokens", "output_tokens", "cache_read_tokens",
"cache_write_tokens", "tokens_original_est", "tokens_saved", "savings_pct", "cost_usd"
(null when no request of the session was priced), "cost_saved_usd".

REQUEST: every column of the `requests` table ("stream" as a boolean; "cost_usd" null for an
unpriced model).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import attrs

from proxy.records import MemoryRow, SessionRecord

RECENT_REQUESTS = 50
TOP_SESSIONS = 10
MINUTES = 60

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


@attrs.frozen
class ActiveSession:
    """A session that was not expired, with its latest Vidurai snapshot if it has one."""

    session: SessionRecord
    state: str | None
    snapshot_at: float | None


def _read_only_uri(path: str) -> str:
    # Read-only: a dashboard query can never take the write lock away from the writer.
    return Path(path).resolve().as_uri() + "?mode=ro"


@contextlib.asynccontextmanager
async def _connect(path: str) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(_read_only_uri(path), uri=True) as conn:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout = 5000")
        yield conn


def _with_savings_pct(row: sqlite3.Row) -> dict[str, Any]:
    """The row as a dict, with savings_pct placed right after tokens_saved."""
    out: dict[str, Any] = {}
    for key in row.keys():
        out[key] = row[key]
        if key == "tokens_saved":
            original = row["tokens_original_est"]
            out["savings_pct"] = round(100.0 * row[key] / original, 2) if original else 0.0
    return out


def _aggregate(row: sqlite3.Row) -> dict[str, Any]:
    out = _with_savings_pct(row)
    out["cost_usd"] = round(out["cost_usd"], 6)
    out["cost_saved_usd"] = round(out["cost_saved_usd"], 6)
    for key in ("avg_duration_ms", "avg_overhead_ms"):
        if out[key] is not None:
            out[key] = round(out[key], 2)
    return out


async def _totals(conn: aiosqlite.Connection) -> dict[str, Any]:
    rows = await conn.execute_fetchall(f"SELECT {_AGGREGATES} FROM requests")
    result = _aggregate(next(iter(rows)))
    rows = await conn.execute_fetchall(
        "SELECT COUNT(*) AS sessions, COALESCE(SUM(expired_at IS NULL), 0) AS active FROM sessions"
    )
    counts = next(iter(rows))
    result["sessions"] = counts["sessions"]
    result["active_sessions"] = counts["active"]
    return result


async def totals(path: str) -> dict[str, Any]:
    """The `totals` object of /metrics.json, for /health."""
    async with _connect(path) as conn:
        return await _totals(conn)


async def metrics_json(path: str, now: float | None = None) -> dict[str, Any]:
    """Everything GET /metrics.json returns (schema in this module's docstring)."""
    now = time.time() if now is None else now
    async with _connect(path) as conn:
        result: dict[str, Any] = {"generated_at": round(now, 3), "totals": await _totals(conn)}
        rows = await conn.execute_fetchall(
            f"SELECT provider, {_AGGREGATES} FROM requests GROUP BY provider ORDER BY requests DESC, provider"
        )
        result["by_provider"] = [_aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT provider, model, {_AGGREGATES} FROM requests GROUP BY provider, model "
            "ORDER BY cost_usd DESC, requests DESC, provider, model"
        )
        result["by_model"] = [_aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            "SELECT id, tenant, created_at, last_seen_at, expired_at, messages, requests, "
            "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "tokens_original_est, tokens_saved, cost_usd, cost_saved_usd FROM sessions "
            "ORDER BY tokens_saved DESC, last_seen_at DESC LIMIT ?",
            (TOP_SESSIONS,),
        )
        result["top_sessions"] = [_with_savings_pct(row) for row in rows]
        rows = await conn.execute_fetchall(
            "SELECT * FROM requests ORDER BY created_at DESC, rowid DESC LIMIT ?", (RECENT_REQUESTS,)
        )
        result["recent_requests"] = [{**dict(row), "stream": bool(row["stream"])} for row in rows]
        result["per_minute"] = await _per_minute(conn, now)
    return result


async def _per_minute(conn: aiosqlite.Connection, now: float) -> list[dict[str, Any]]:
    last = int(now // 60) * 60
    first = last - (MINUTES - 1) * 60
    rows = await conn.execute_fetchall(
        f"SELECT CAST(created_at / 60 AS INTEGER) * 60 AS minute, {_AGGREGATES} FROM requests "
        "WHERE created_at >= ? AND created_at < ? GROUP BY minute",
        (first, last + 60),
    )
    found = {row["minute"]: _aggregate(row) for row in rows}
    empty = _aggregate(next(iter(await conn.execute_fetchall(f"SELECT {_AGGREGATES} FROM requests WHERE 0"))))
    return [found.get(minute) or {"minute": minute, **empty} for minute in range(first, last + 60, 60)]


async def active_sessions(
    path: str, since: float | None = None, *, states: bool = True
) -> list[ActiveSession]:
    """Sessions not expired (and seen at or after `since`), least recently seen first, each with its
    latest snapshot; `states=False` leaves the snapshot's text out (`state` is then "" when there is one)."""
    state = "sn.state" if states else "CASE WHEN sn.id IS NULL THEN NULL ELSE '' END"
    async with _connect(path) as conn:
        rows = await conn.execute_fetchall(
            "SELECT s.id, s.tenant, s.created_at, s.last_seen_at, s.messages, s.expired_at, "
            f"       {state} AS state, sn.created_at AS snapshot_at "
            "FROM sessions s LEFT JOIN snapshots sn ON sn.id = "
            "    (SELECT id FROM snapshots WHERE session_id = s.id ORDER BY id DESC LIMIT 1) "
            "WHERE s.expired_at IS NULL AND s.last_seen_at >= ? ORDER BY s.last_seen_at",
            (since if since is not None else float("-inf"),),
        )
    return [
        ActiveSession(
            session=SessionRecord(
                id=row["id"],
                tenant=row["tenant"],
                created_at=row["created_at"],
                last_seen_at=row["last_seen_at"],
                messages=row["messages"],
                expired_at=row["expired_at"],
            ),
            state=row["state"],
            snapshot_at=row["snapshot_at"],
        )
        for row in rows
    ]


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
