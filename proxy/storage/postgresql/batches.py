"""One batch of queued records written to PostgreSQL in one transaction: COPY for the request and
audit rows, one pipelined executemany for each other table, the session totals rollup with them."""

from __future__ import annotations

from typing import Any

import psycopg

from proxy.storage import rollup
from proxy.storage.postgresql.statements import (
    ADD_TO_SESSION,
    COPY_AUDIT,
    COPY_REQUESTS,
    INSERT_MEMORY,
    INSERT_SNAPSHOT,
    PRUNE_SNAPSHOTS,
    STORED_REQUESTS,
    UPSERT_SESSION,
)
from proxy.storage.rows import Tables


def _by_session(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # Every instance locks session rows in id order: two batches touching the same sessions wait for
    # each other instead of deadlocking. sorted() is stable: one session's upserts keep queue order.
    return sorted(rows, key=lambda row: row[0])


def write(conn: psycopg.Connection, tables: Tables) -> None:
    """Run one batch's statements (the caller holds the transaction)."""
    with conn.cursor() as cur:
        requests = tables.requests
        if requests:
            cur.execute(STORED_REQUESTS, ([row[rollup.ID] for row in requests],))
            requests = rollup.unseen(requests, {found for (found,) in cur.fetchall()})
        if tables.sessions:
            cur.executemany(UPSERT_SESSION, _by_session(tables.sessions))
        totals = _by_session(rollup.session_totals(requests))
        if totals:
            cur.executemany(ADD_TO_SESSION, [(*total, total[rollup.MESSAGES_AT]) for total in totals])
        if requests:
            with cur.copy(COPY_REQUESTS) as copy:
                for row in requests:
                    copy.write_row(row)
        if tables.memories:
            cur.executemany(INSERT_MEMORY, tables.memories)
        if tables.snapshots:
            cur.executemany(INSERT_SNAPSHOT, tables.snapshots)
            cur.executemany(
                PRUNE_SNAPSHOTS, [{"session": s} for s in sorted({row[0] for row in tables.snapshots})]
            )
        if tables.audits:
            with cur.copy(COPY_AUDIT) as copy:
                for row in tables.audits:
                    copy.write_row(row)
