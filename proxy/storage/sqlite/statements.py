"""The SQL the SQLite engine runs for each table (parameters in proxy/storage/rows.py order)."""

from __future__ import annotations

from proxy.storage.rollup import SUMMED
from proxy.storage.rows import REQUEST_COLUMNS, SNAPSHOTS_KEPT

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

# ?5 (messages) is NULL when no request of the batch knew the conversation's length. A request
# means the session is live: it is no longer expired. NULL costs are skipped, not zeroed.
ADD_TO_SESSION = f"""
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, requests,
                      {", ".join(SUMMED)}, cost_usd, cost_saved_usd)
VALUES (?1, ?2, ?3, ?4, COALESCE(?5, 0), ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (id) DO UPDATE SET
    last_seen_at = max(last_seen_at, excluded.last_seen_at),
    messages     = CASE WHEN ?5 IS NULL THEN messages ELSE excluded.messages END,
    expired_at   = NULL,
    requests     = requests + excluded.requests,
    {", ".join(f"{column} = {column} + excluded.{column}" for column in SUMMED)},
    cost_usd       = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd
                          ELSE COALESCE(cost_usd, 0) + excluded.cost_usd END,
    cost_saved_usd = CASE WHEN excluded.cost_saved_usd IS NULL THEN cost_saved_usd
                          ELSE COALESCE(cost_saved_usd, 0) + excluded.cost_saved_usd END
"""

# Expiry is decided here, against the last_seen_at every instance writes, never by one process's
# memory: only the sessions no instance has served for the timeout are expired, each by one UPDATE.
EXPIRE_IDLE = (
    "UPDATE sessions SET expired_at = ? WHERE expired_at IS NULL AND last_seen_at < ? "
    "RETURNING id, last_seen_at"
)
