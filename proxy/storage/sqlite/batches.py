"""One batch of queued records written to SQLite in one go: one `executemany` per table.

The writer thread spends its time in SQLite rather than in per-row Python: turning a record into
its parameter tuple is the only work done per row.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from proxy.storage import rollup
from proxy.storage.rows import Tables
from proxy.storage.sqlite.statements import (
    ADD_TO_SESSION,
    INSERT_AUDIT,
    INSERT_MEMORY,
    INSERT_REQUEST,
    INSERT_SNAPSHOT,
    PRUNE_SNAPSHOTS,
    UPSERT_SESSION,
)

# SQLite's default limit on parameters per statement is far above this.
_LOOKUP_CHUNK = 500


def new_requests(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The request rows whose id is neither stored yet nor earlier in the batch."""
    stored: set[Any] = set()
    ids = [row[rollup.ID] for row in rows]
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        stored.update(
            found for (found,) in conn.execute(f"SELECT id FROM requests WHERE id IN ({marks})", chunk)
        )
    return rollup.unseen(rows, stored)


def write(conn: sqlite3.Connection, tables: Tables) -> None:
    """Run one batch's statements, one executemany per table (the caller holds the transaction).

    Session upserts go first, so a request's totals land on the session row whatever the order in
    which they were queued; each session's totals are added once per batch (proxy/storage/rollup.py).
    """
    requests = new_requests(conn, tables.requests) if tables.requests else []
    for sql, rows in (
        (UPSERT_SESSION, tables.sessions),
        (ADD_TO_SESSION, rollup.session_totals(requests)),
        (INSERT_REQUEST, requests),
        (INSERT_MEMORY, tables.memories),
        (INSERT_SNAPSHOT, tables.snapshots),
        (INSERT_AUDIT, tables.audits),
    ):
        if rows:
            conn.executemany(sql, rows)
    if tables.snapshots:
        conn.executemany(PRUNE_SNAPSHOTS, [(session,) for session in {row[0] for row in tables.snapshots}])
