"""One batch of queued records written in one go: grouped by table, one `executemany` each.

The writer thread spends its time in SQLite rather than in per-row Python: turning a record into
its parameter tuple is the only work done per row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import attrs

from proxy.records import AuditRecord, MemoryRow, MemoryRows, RequestRecord, SessionRecord, SnapshotRecord
from proxy.storage import rollup
from proxy.storage.statements import (
    INSERT_AUDIT,
    INSERT_MEMORY,
    INSERT_REQUEST,
    INSERT_SNAPSHOT,
    PRUNE_SNAPSHOTS,
    UPSERT_SESSION,
    Record,
    audit_params,
    memory_params,
    request_params,
    session_params,
    snapshot_params,
)


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


def write(conn: sqlite3.Connection, tables: Tables) -> None:
    """Run one batch's statements, one executemany per table (the caller holds the transaction).

    Session upserts go first, so a request's totals land on the session row whatever the order in
    which they were queued; each session's totals are added once per batch (proxy/storage/rollup.py).
    """
    requests = rollup.new_requests(conn, tables.requests) if tables.requests else []
    for sql, rows in (
        (UPSERT_SESSION, tables.sessions),
        (rollup.ADD_TO_SESSION, rollup.session_totals(requests)),
        (INSERT_REQUEST, requests),
        (INSERT_MEMORY, tables.memories),
        (INSERT_SNAPSHOT, tables.snapshots),
        (INSERT_AUDIT, tables.audits),
    ):
        if rows:
            conn.executemany(sql, rows)
    if tables.snapshots:
        conn.executemany(PRUNE_SNAPSHOTS, [(session,) for session in {row[0] for row in tables.snapshots}])
