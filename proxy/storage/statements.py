"""The SQL the writer runs for each table, and the parameter tuples built from the queued records."""

from __future__ import annotations

import json
from typing import Any

from proxy.records import AuditRecord, MemoryRow, MemoryRows, RequestRecord, SessionRecord, SnapshotRecord

# Snapshots are whole serialized states; the latest is what a restart restores, and a couple
# more are kept in case the latest write was cut short.
SNAPSHOTS_KEPT = 3

# Parameter order of a `requests` row (proxy/storage/totals.py reads it by position).
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
    "tags",
)
INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)

UPSERT_SESSION = """
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, expired_at, label)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    tenant       = CASE WHEN tenant = '' THEN excluded.tenant ELSE tenant END,
    label        = COALESCE(excluded.label, label),
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

Record = RequestRecord | SessionRecord | MemoryRow | MemoryRows | SnapshotRecord | AuditRecord


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
        json.dumps(record.tags, ensure_ascii=False, sort_keys=True) if record.tags else None,
    )


def session_params(session: SessionRecord) -> tuple[Any, ...]:
    return (
        session.id,
        session.tenant,
        session.created_at,
        session.last_seen_at,
        session.messages,
        session.expired_at,
        session.label,
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


def snapshot_params(snapshot: SnapshotRecord) -> tuple[Any, ...]:
    return (snapshot.session_id, snapshot.created_at, snapshot.state)


def audit_params(audit: AuditRecord) -> tuple[Any, ...]:
    # default=str: a stray non-JSON value (a Path, an exception class) must not lose the row.
    detail = json.dumps(audit.detail, sort_keys=True, default=str)
    return (audit.session_id, audit.event, detail, audit.created_at)
