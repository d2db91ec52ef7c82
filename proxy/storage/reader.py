"""Read queries for /metrics.json, /health and session restore, each on its own connection.

`GET /metrics.json` schema (times are unix seconds, costs US dollars, tokens integers):

    {
      "generated_at": 1767225600.0,
      "totals": {AGG, "sessions": 12, "active_sessions": 3},
      "by_provider": [{"provider": "anthropic", AGG}, ...],          # most requests first
      "by_model": [{"provider": "anthropic", "model": "claude-...", AGG}, ...],  # highest cost first
      "by_tag": [{"tag": "team=payments", "key": "team", "value": "payments", AGG}, ...],  # by cost
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

With ?session=NAME (a session's label or id) or ?tag=key=value, or both, every part counts
only the matching requests (and "sessions" only the matching sessions); "filter" echoes them.
A request with two tags counts once under each in "by_tag".

SESSION: "id", "label" (the X-Vidurai-Session header as sent, null without), "tenant",
"created_at", "last_seen_at", "expired_at" (null while active),
"messages", "requests", "input_tokens", "output_tokens", "cache_read_tokens",
"cache_write_tokens", "tokens_original_est", "tokens_saved", "savings_pct", "cost_usd"
(null when no request of the session was priced), "cost_saved_usd", "summary_calls" and
"summary_cost_usd" (its summary requests with summarizer = model, counted in cost_usd and taken off
cost_saved_usd).

REQUEST: every column of the `requests` table ("stream" as a boolean; "cost_usd" null for an
unpriced model; "tags" an object, null without).
"""

from __future__ import annotations

import contextlib
import json
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


# A session's summary calls (summarizer = model): how many, and what they cost (already in its
# cost_usd, and taken off its cost_saved_usd).
_SUMMARY_CALLS = """
    (SELECT COUNT(*) FROM requests r WHERE r.session_id = sessions.id AND r.endpoint = 'summary')
        AS summary_calls,
    (SELECT TOTAL(cost_usd) FROM requests r WHERE r.session_id = sessions.id AND r.endpoint = 'summary')
        AS summary_cost_usd
"""


@attrs.frozen
class Filter:
    """Which requests a read counts: one session (by label or id) and/or one tag."""

    session: str | None = None
    tag: tuple[str, str] | None = None

    def requests(self) -> tuple[str, list[Any]]:
        """A condition on `requests` and its parameters ("1" when nothing is filtered)."""
        conditions: list[str] = []
        params: list[Any] = []
        if self.session is not None:
            conditions.append("session_id IN (SELECT id FROM sessions WHERE id = ? OR label = ?)")
            params += [self.session, self.session]
        if self.tag is not None:
            conditions.append("EXISTS (SELECT 1 FROM json_each(requests.tags) WHERE key = ? AND value = ?)")
            params += list(self.tag)
        return " AND ".join(conditions) or "1", params

    def sessions(self) -> tuple[str, list[Any]]:
        """A condition on `sessions`: the named session, the sessions with a tagged request."""
        conditions: list[str] = []
        params: list[Any] = []
        if self.session is not None:
            conditions.append("(id = ? OR label = ?)")
            params += [self.session, self.session]
        if self.tag is not None:
            tagged, tag_params = Filter(tag=self.tag).requests()
            conditions.append(f"id IN (SELECT session_id FROM requests WHERE {tagged})")
            params += tag_params
        return " AND ".join(conditions) or "1", params


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


async def _totals(conn: aiosqlite.Connection, where: Filter) -> dict[str, Any]:
    condition, params = where.requests()
    rows = await conn.execute_fetchall(f"SELECT {_AGGREGATES} FROM requests WHERE {condition}", params)
    result = _aggregate(next(iter(rows)))
    condition, params = where.sessions()
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
    """Everything GET /metrics.json returns (schema in this module's docstring)."""
    now = time.time() if now is None else now
    where = Filter() if where is None else where
    condition, params = where.requests()
    async with _connect(path) as conn:
        result: dict[str, Any] = {"generated_at": round(now, 3), "totals": await _totals(conn, where)}
        if where != Filter():
            result["filter"] = {"session": where.session, "tag": "=".join(where.tag) if where.tag else None}
        rows = await conn.execute_fetchall(
            f"SELECT provider, {_AGGREGATES} FROM requests WHERE {condition} "
            "GROUP BY provider ORDER BY requests DESC, provider",
            params,
        )
        result["by_provider"] = [_aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT provider, model, {_AGGREGATES} FROM requests WHERE {condition} GROUP BY provider, model "
            "ORDER BY cost_usd DESC, requests DESC, provider, model",
            params,
        )
        result["by_model"] = [_aggregate(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT tag.key AS key, tag.value AS value, {_AGGREGATES} "
            f"FROM requests, json_each(requests.tags) AS tag WHERE {condition} "
            "GROUP BY tag.key, tag.value ORDER BY cost_usd DESC, requests DESC, tag.key, tag.value",
            params,
        )
        result["by_tag"] = [{"tag": f"{row['key']}={row['value']}", **_aggregate(row)} for row in rows]
        session_condition, session_params = where.sessions()
        rows = await conn.execute_fetchall(
            "SELECT id, label, tenant, created_at, last_seen_at, expired_at, messages, requests, "
            "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "tokens_original_est, tokens_saved, cost_usd, cost_saved_usd, "
            f"{_SUMMARY_CALLS} FROM sessions "
            f"WHERE {session_condition} ORDER BY tokens_saved DESC, last_seen_at DESC LIMIT ?",
            (*session_params, TOP_SESSIONS),
        )
        result["top_sessions"] = [_with_savings_pct(row) for row in rows]
        rows = await conn.execute_fetchall(
            f"SELECT * FROM requests WHERE {condition} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, RECENT_REQUESTS),
        )
        result["recent_requests"] = [_request(row) for row in rows]
        result["per_minute"] = await _per_minute(conn, now, where)
    return result


def _request(row: sqlite3.Row) -> dict[str, Any]:
    return {
        **dict(row),
        "stream": bool(row["stream"]),
        "tags": json.loads(row["tags"]) if row["tags"] else None,
    }


async def _per_minute(conn: aiosqlite.Connection, now: float, where: Filter) -> list[dict[str, Any]]:
    last = int(now // 60) * 60
    first = last - (MINUTES - 1) * 60
    condition, params = where.requests()
    rows = await conn.execute_fetchall(
        f"SELECT CAST(created_at / 60 AS INTEGER) * 60 AS minute, {_AGGREGATES} FROM requests "
        f"WHERE created_at >= ? AND created_at < ? AND {condition} GROUP BY minute",
        (first, last + 60, *params),
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
            "SELECT s.id, s.tenant, s.created_at, s.last_seen_at, s.messages, s.expired_at, s.label, "
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
                label=row["label"],
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
