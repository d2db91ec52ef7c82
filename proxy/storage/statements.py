"""The SQL the writer runs for each kind of queued row, and the parameters built from records."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from proxy.records import MemoryRow, RequestRecord, SessionRecord

# Snapshots are whole serialized states; the latest is what a restart restores, and a couple
# more are kept in case the latest write was cut short.
SNAPSHOTS_KEPT = 3

REQUEST_COLUMNS = (
    "id",
    "created_at",
    "session_id",
    "tenant",
    "provider",
    "endpoint",
    "method",
    "path",
    "model",
    "stream",
    "status",
    "duration_ms",
    "ttfb_ms",
    "overhead_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "tokens_original_est",
    "tokens_forwarded_est",
    "tokens_saved",
    "messages_original",
    "messages_forwarded",
    "cost_usd",
    "cost_saved_usd",
    "error",
)

INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)

# Adds one request to its session's running totals, creating the session row if the request
# arrived before (or without) an upsert_session. SUM-like: NULL costs are skipped, not zeroed.
ADD_TO_SESSION = """
INSERT INTO sessions (id, tenant, created_at, last_seen_at, requests, input_tokens, output_tokens,
                      cache_read_tokens, cache_write_tokens, tokens_original_est, tokens_saved,
                      cost_usd, cost_saved_usd)
VALUES (:session_id, :tenant, :created_at, :created_at, 1, :input, :output, :cache_read,
        :cache_write, :original, :saved, :cost, :cost_saved)
ON CONFLICT (id) DO UPDATE SET
    last_seen_at        = max(last_seen_at, excluded.last_seen_at),
    requests            = requests + 1,
    input_tokens        = input_tokens + excluded.input_tokens,
    output_tokens       = output_tokens + excluded.output_tokens,
    cache_read_tokens   = cache_read_tokens + excluded.cache_read_tokens,
    cache_write_tokens  = cache_write_tokens + excluded.cache_write_tokens,
    tokens_original_est = tokens_original_est + excluded.tokens_original_est,
    tokens_saved        = tokens_saved + excluded.tokens_saved,
    cost_usd            = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd
                               ELSE COALESCE(cost_usd, 0) + excluded.cost_usd END,
    cost_saved_usd      = CASE WHEN excluded.cost_saved_usd IS NULL THEN cost_saved_usd
                               ELSE COALESCE(cost_saved_usd, 0) + excluded.cost_saved_usd END
"""

UPSERT_SESSION = """
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, expired_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    tenant       = CASE WHEN tenant = '' THEN excluded.tenant ELSE tenant END,
    created_at   = min(created_at, excluded.created_at),
    last_seen_at = max(last_seen_at, excluded.last_seen_at),
    messages     = excluded.messages,
    expired_at   = excluded.expired_at
"""

INSERT_MEMORY = """
INSERT INTO memories (session_id, position, role, kind, importance, content, content_sha, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, content_sha, position) DO NOTHING
"""

INSERT_SNAPSHOT = "INSERT INTO snapshots (session_id, created_at, state) VALUES (?, ?, ?)"

PRUNE_SNAPSHOTS = f"""
DELETE FROM snapshots WHERE session_id = ?1 AND id NOT IN (
    SELECT id FROM snapshots WHERE session_id = ?1 ORDER BY id DESC LIMIT {SNAPSHOTS_KEPT})
"""

INSERT_AUDIT = "INSERT INTO audit (session_id, event, detail, created_at) VALUES (?, ?, ?, ?)"


def request_params(record: RequestRecord) -> tuple[Any, ...]:
    """The `requests` row of a record, in REQUEST_COLUMNS order."""
    usage = record.usage
    return (
        record.id,
        record.created_at,
        record.session_id,
        record.tenant,
        record.provider,
        record.endpoint,
        record.method,
        record.path,
        record.model,
        int(record.stream),
        record.status,
        record.duration_ms,
        record.ttfb_ms,
        record.overhead_ms,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        record.tokens_original_est,
        record.tokens_forwarded_est,
        record.tokens_saved,
        record.messages_original,
        record.messages_forwarded,
        record.cost_usd,
        record.cost_saved_usd,
        record.error,
    )


def session_params(session: SessionRecord) -> tuple[Any, ...]:
    return (
        session.id,
        session.tenant,
        session.created_at,
        session.last_seen_at,
        session.messages,
        session.expired_at,
    )


def memory_params(row: MemoryRow) -> tuple[Any, ...]:
    return (
        row.session_id,
        row.position,
        row.role,
        row.kind,
        row.importance,
        row.content,
        row.content_sha,
        row.created_at,
    )


def audit_params(session_id: str | None, event: str, detail: dict[str, Any], at: float) -> tuple[Any, ...]:
    # default=str: a stray non-JSON value (a Path, an exception class) must not lose the row.
    return (session_id, event, json.dumps(detail, sort_keys=True, default=str), at)


def _session_totals(params: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(REQUEST_COLUMNS, params, strict=True))
    return {
        "session_id": row["session_id"],
        "tenant": row["tenant"] or "",
        "created_at": row["created_at"],
        "input": row["input_tokens"] or 0,
        "output": row["output_tokens"] or 0,
        "cache_read": row["cache_read_tokens"] or 0,
        "cache_write": row["cache_write_tokens"] or 0,
        "original": row["tokens_original_est"] or 0,
        "saved": row["tokens_saved"] or 0,
        "cost": row["cost_usd"],
        "cost_saved": row["cost_saved_usd"],
    }


def apply(conn: sqlite3.Connection, kind: str, params: tuple[Any, ...]) -> None:
    """Run the statements of one queued row (the caller holds the transaction)."""
    if kind == "request":
        cursor = conn.execute(INSERT_REQUEST, params)
        # rowcount 0: the id was already stored (a retried batch), so it is not counted twice.
        if cursor.rowcount == 1 and params[2] is not None:
            conn.execute(ADD_TO_SESSION, _session_totals(params))
    elif kind == "session":
        conn.execute(UPSERT_SESSION, params)
    elif kind == "memories":
        conn.executemany(INSERT_MEMORY, params)
    elif kind == "snapshot":
        conn.execute(INSERT_SNAPSHOT, params)
        conn.execute(PRUNE_SNAPSHOTS, (params[0],))
    elif kind == "audit":
        conn.execute(INSERT_AUDIT, params)
    else:
        raise ValueError(f"unknown row kind {kind!r}")
