"""What the store's reads return, whichever engine answers: /metrics.json's shape, built from rows.

Both engines run the same queries in their own dialect and pass their rows (mappings) through
these functions, so the same records give the same JSON on SQLite and PostgreSQL.

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

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from proxy.records import SessionRecord

RECENT_REQUESTS = 50
TOP_SESSIONS = 10
MINUTES = 60
# What a top_sessions entry shows, in order: `sessions` columns, then its summary calls.
SESSION_COLUMNS = (
    "id, label, tenant, created_at, last_seen_at, expired_at, messages, requests, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "tokens_original_est, tokens_saved, cost_usd, cost_saved_usd, "
    # A session's summary calls (summarizer = model): how many, and what they cost (already in its
    # cost_usd, and taken off its cost_saved_usd). The same SQL on both engines.
    "(SELECT COUNT(*) FROM requests r WHERE r.session_id = sessions.id AND r.endpoint = 'summary') "
    "AS summary_calls, "
    "(SELECT COALESCE(SUM(r.cost_usd), 0.0) FROM requests r "
    "WHERE r.session_id = sessions.id AND r.endpoint = 'summary') AS summary_cost_usd"
)


class Row(Protocol):
    """A row as both engines' drivers return it: sqlite3.Row, or psycopg's dict row."""

    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, key: str, /) -> Any: ...


@attrs.frozen
class Filter:
    """Which requests a read counts: one session (by label or id) and/or one tag."""

    session: str | None = None
    tag: tuple[str, str] | None = None

    def echo(self) -> dict[str, Any]:
        """The "filter" object of /metrics.json."""
        return {"session": self.session, "tag": "=".join(self.tag) if self.tag else None}


@attrs.frozen
class ActiveSession:
    """A session that was not expired, with its latest Vidurai snapshot if it has one."""

    session: SessionRecord
    state: str | None
    snapshot_at: float | None


@attrs.frozen
class StoredSession:
    """A session as the database knows it (whichever instance served it), for its first request here."""

    record: SessionRecord
    has_snapshot: bool


def session_record(row: Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        tenant=row["tenant"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        messages=row["messages"],
        expired_at=row["expired_at"],
        label=row["label"],
    )


def with_savings_pct(row: Row) -> dict[str, Any]:
    """The row as a dict, with savings_pct placed right after tokens_saved."""
    out: dict[str, Any] = {}
    for key in row.keys():
        out[key] = row[key]
        if key == "tokens_saved":
            original = row["tokens_original_est"]
            out["savings_pct"] = round(100.0 * row[key] / original, 2) if original else 0.0
    return out


def aggregate(row: Row) -> dict[str, Any]:
    """An AGG object (see the module docstring) from a row of the engine's aggregate query."""
    out = with_savings_pct(row)
    out["cost_usd"] = round(out["cost_usd"], 6)
    out["cost_saved_usd"] = round(out["cost_saved_usd"], 6)
    for key in ("avg_duration_ms", "avg_overhead_ms"):
        if out[key] is not None:
            out[key] = round(out[key], 2)
    return out


def request(row: Row) -> dict[str, Any]:
    """A REQUEST object from a `requests` row."""
    return {
        **dict(row),
        "stream": bool(row["stream"]),
        "tags": json.loads(row["tags"]) if row["tags"] else None,
    }


def minutes(now: float) -> range:
    """The per_minute window: the last MINUTES minutes (unix seconds of each minute's start)."""
    last = int(now // 60) * 60
    return range(last - (MINUTES - 1) * 60, last + 60, 60)


def per_minute(
    found: Mapping[int, dict[str, Any]], empty: dict[str, Any], now: float
) -> list[dict[str, Any]]:
    """Every minute of the window, zero-filled where nothing was found."""
    return [found.get(minute) or {"minute": minute, **empty} for minute in minutes(now)]
