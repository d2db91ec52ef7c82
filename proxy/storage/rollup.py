"""Sessions' running totals, summed per batch: one upsert per session and batch, not per request.

A coding agent sends tens of requests per conversation; upserting its session row (three indexes)
once per request cost SQLite more than the request rows themselves. Each engine leaves out the
requests whose id is already stored (a batch written twice), so each is counted once; the SQL that
adds these totals to the session row is the engine's (ADD_TO_SESSION in its statements module).
"""

from __future__ import annotations

from typing import Any

from proxy.storage.rows import REQUEST_COLUMNS

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
SUMMED = tuple(column for column, _ in _SUMS)
# Where session_totals() puts the batch's message count in each tuple.
MESSAGES_AT = 4


def unseen(rows: list[tuple[Any, ...]], stored: set[Any]) -> list[tuple[Any, ...]]:
    """The request rows whose id is neither in `stored` (found in the database) nor earlier in the batch."""
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
