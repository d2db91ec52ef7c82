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


def _session_steps(tables: Tables, requests: list[tuple[Any, ...]]) -> list[tuple[str, tuple[Any, ...]]]:
    """Both statements on `sessions`, in one pass ordered by session id.

    Every instance then locks session rows in the same order, so two batches touching the same
    sessions wait for each other instead of deadlocking. Two passes each sorted on its own were not
    enough (an upsert of one batch against the totals of another): PostgreSQL noticed after its
    deadlock_timeout (1 s) and failed one batch, which held its instance's rows back by a second or
    more under a fleet's load (tests/test_cluster_e2e.py). The sort is stable: one session's upserts
    keep queue order, and its totals come after them.
    """
    steps = [(row[0], 0, UPSERT_SESSION, row) for row in tables.sessions]
    steps += [
        (total[0], 1, ADD_TO_SESSION, (*total, total[rollup.MESSAGES_AT]))
        for total in rollup.session_totals(requests)
    ]
    steps.sort(key=lambda step: (step[0], step[1]))
    return [(sql, params) for _, _, sql, params in steps]


def write(conn: psycopg.Connection, tables: Tables) -> None:
    """Run one batch's statements (the caller holds the transaction)."""
    with conn.cursor() as cur:
        requests = tables.requests
        if requests:
            cur.execute(STORED_REQUESTS, ([row[rollup.ID] for row in requests],))
            requests = rollup.unseen(requests, {found for (found,) in cur.fetchall()})
        steps = _session_steps(tables, requests)
        if steps:
            with conn.pipeline():  # sent together, as executemany would: one round trip
                for sql, params in steps:
                    cur.execute(sql, params)
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
