"""The queued records and their rows: one parameter tuple per row, in the column order both engines use."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from proxy.records import AuditRecord, MemoryRow, MemoryRows, RequestRecord, SessionRecord, SnapshotRecord

# Snapshots are whole serialized states; the latest is what a restart restores, and a couple
# more are kept in case the latest write was cut short.
SNAPSHOTS_KEPT = 3

# Parameter order of a `requests` row (proxy/storage/rollup.py reads it by position).
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


def expired_audits(expired: list[tuple[str, float]], now: float) -> list[tuple[Any, ...]]:
    """The `audit` rows of sessions just expired, written in the expiring transaction (once each)."""
    return [
        audit_params(AuditRecord(sid, "expired", {"idle_s": round(now - seen)}, now)) for sid, seen in expired
    ]


def audit_params(audit: AuditRecord) -> tuple[Any, ...]:
    # default=str: a stray non-JSON value (a Path, an exception class) must not lose the row.
    detail = json.dumps(audit.detail, sort_keys=True, default=str)
    return (audit.session_id, audit.event, detail, audit.created_at)


@attrs.define
class Tables:
    """One batch's parameter tuples, table by table."""

    sessions: list[tuple[Any, ...]] = attrs.Factory(list)
    requests: list[tuple[Any, ...]] = attrs.Factory(list)
    memories: list[tuple[Any, ...]] = attrs.Factory(list)
    snapshots: list[tuple[Any, ...]] = attrs.Factory(list)
    audits: list[tuple[Any, ...]] = attrs.Factory(list)


def split(records: Iterable[Record]) -> Tables:
    """The records' rows grouped by table, each list in queue order."""
    tables = Tables()
    sessions, requests, memories = tables.sessions, tables.requests, tables.memories
    for record in records:
        if isinstance(record, RequestRecord):
            requests.append(request_params(record))
        elif isinstance(record, SessionRecord):
            sessions.append(session_params(record))
        elif isinstance(record, MemoryRow):
            memories.append(memory_params(record))
        elif isinstance(record, MemoryRows):
            memories.extend(memory_params(row) for row in record.rows)
        elif isinstance(record, SnapshotRecord):
            tables.snapshots.append(snapshot_params(record))
        elif isinstance(record, AuditRecord):
            tables.audits.append(audit_params(record))
        else:
            raise TypeError(f"not a storage record: {type(record).__name__}")
    return tables
