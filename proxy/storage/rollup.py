"""Sessions' running totals, summed per batch: one upsert per session and batch, not per request.

A coding agent sends tens of requests per conversation; upserting its session row (three indexes)
once per request cost SQLite more than the request rows themselves. Requests whose id is already
stored (a batch written twice) are left out, so each is counted once.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from proxy.storage.statements import REQUEST_COLUMNS

_AT = {name: position for position, name in enumerate(REQUEST_COLUMNS)}
ID, CREATED, SESSION, TENANT, MESSAGES = (
    _AT[name] for name in ("id", "created_at", "session_id", "tenant", "messages_original")
)
# Summed columns: the session's column, the request's.
_SUMS = (
    ("input_tokens", _AT["input_tokens"]),
    ("output_tokens", _AT["output_tokens"]),
    ("cache_read_tokens", _AT["cache_read_tokens"]),
    ("cache_write_tokens", _AT["cache_write_tokens"]),
    ("tokens_original_est", _AT["tokens_original_est"]),
    ("tokens_saved", _AT["tokens_saved"]),
)
COST, COST_SAVED = _AT["cost_usd"], _AT["cost_saved_usd"]

# ?5 (messages) is NULL when no request of the batch knew the conversation's length. A request
# means the session is live: it is no longer expired. NULL costs are skipped, not zeroed.
ADD_TO_SESSION = f"""
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, requests,
                      {", ".join(column for column, _ in _SUMS)}, cost_usd, cost_saved_usd)
VALUES (?1, ?2, ?3, ?4, COALESCE(?5, 0), ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (id) DO UPDATE SET
    last_seen_at = max(last_seen_at, excluded.last_seen_at),
    messages     = CASE WHEN ?5 IS NULL THEN messages ELSE excluded.messages END,
    expired_at   = NULL,
    requests     = requests + excluded.requests,
    {", ".join(f"{column} = {column} + excluded.{column}" for column, _ in _SUMS)},
    cost_usd       = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd
                          ELSE COALESCE(cost_usd, 0) + excluded.cost_usd END,
    cost_saved_usd = CASE WHEN excluded.cost_saved_usd IS NULL THEN cost_saved_usd
                          ELSE COALESCE(cost_saved_usd, 0) + excluded.cost_saved_usd END
"""
# SQLite's default limit on parameters per statement is far above this.
_LOOKUP_CHUNK = 500


def new_requests(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The request rows whose id is neither stored yet nor earlier in the batch."""
    stored: set[Any] = set()
    ids = [row[ID] for row in rows]
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        stored.update(
            found for (found,) in conn.execute(f"SELECT id FROM requests WHERE id IN ({marks})", chunk)
        )
    fresh = []
    for row in rows:
        if row[ID] not in stored:
            stored.add(row[ID])
            fresh.append(row)
    return fresh


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def session_totals(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One ADD_TO_SESSION parameter tuple per session of the batch's (new) request rows."""
    by_session: dict[str, list[Any]] = {}
    for row in rows:
        session = row[SESSION]
        if session is None:
            continue
        total = by_session.get(session)
        if total is None:
            by_session[session] = [
                session,
                row[TENANT] or "",
                row[CREATED],
                row[CREATED],
                row[MESSAGES],
                1,
                *(row[at] or 0 for _, at in _SUMS),
                row[COST],
                row[COST_SAVED],
            ]
            continue
        total[2] = min(total[2], row[CREATED])
        total[3] = max(total[3], row[CREATED])
        if row[MESSAGES] is not None:  # the latest request that knew says how long it is now
            total[4] = row[MESSAGES]
        total[5] += 1
        for offset, (_, at) in enumerate(_SUMS, start=6):
            total[offset] += row[at] or 0
        total[12] = _add(total[12], row[COST])
        total[13] = _add(total[13], row[COST_SAVED])
    return [tuple(total) for total in by_session.values()]
