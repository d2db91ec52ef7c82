"""The SQL the PostgreSQL engine runs for each table (parameters in proxy/storage/rows.py order)."""

from __future__ import annotations

from proxy.storage.rollup import SUMMED
from proxy.storage.rows import REQUEST_COLUMNS, SNAPSHOTS_KEPT

# COPY, not INSERT: the requests table takes most rows (bench/pg_drivers.py measured both).
COPY_REQUESTS = f"COPY requests ({', '.join(REQUEST_COLUMNS)}) FROM STDIN"
STORED_REQUESTS = "SELECT id FROM requests WHERE id = ANY(%s)"

UPSERT_SESSION = """
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, expired_at, label)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    tenant       = CASE WHEN sessions.tenant = '' THEN excluded.tenant ELSE sessions.tenant END,
    label        = COALESCE(excluded.label, sessions.label),
    created_at   = LEAST(sessions.created_at, excluded.created_at),
    last_seen_at = GREATEST(sessions.last_seen_at, excluded.last_seen_at),
    messages     = excluded.messages,
    expired_at   = excluded.expired_at
"""

# The rollup's 14 values, then the batch's message count once more (NULL when no request knew it).
ADD_TO_SESSION = f"""
INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, requests,
                      {", ".join(SUMMED)}, cost_usd, cost_saved_usd)
VALUES (%s, %s, %s, %s, COALESCE(%s::integer, 0), %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    last_seen_at = GREATEST(sessions.last_seen_at, excluded.last_seen_at),
    messages     = CASE WHEN %s::integer IS NULL THEN sessions.messages ELSE excluded.messages END,
    expired_at   = NULL,
    requests     = sessions.requests + excluded.requests,
    {", ".join(f"{column} = sessions.{column} + excluded.{column}" for column in SUMMED)},
    cost_usd       = CASE WHEN excluded.cost_usd IS NULL THEN sessions.cost_usd
                          ELSE COALESCE(sessions.cost_usd, 0) + excluded.cost_usd END,
    cost_saved_usd = CASE WHEN excluded.cost_saved_usd IS NULL THEN sessions.cost_saved_usd
                          ELSE COALESCE(sessions.cost_saved_usd, 0) + excluded.cost_saved_usd END
"""

INSERT_MEMORY = """
INSERT INTO memories (session_id, position, role, kind, importance, content, content_sha, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (session_id, content_sha, position) DO NOTHING
"""

INSERT_SNAPSHOT = "INSERT INTO snapshots (session_id, created_at, state) VALUES (%s, %s, %s)"

PRUNE_SNAPSHOTS = f"""
DELETE FROM snapshots WHERE session_id = %(session)s AND id NOT IN (
    SELECT id FROM snapshots WHERE session_id = %(session)s ORDER BY id DESC LIMIT {SNAPSHOTS_KEPT})
"""

INSERT_AUDIT = "INSERT INTO audit (session_id, event, detail, created_at) VALUES (%s, %s, %s, %s)"
COPY_AUDIT = "COPY audit (session_id, event, detail, created_at) FROM STDIN"

# As in SQLite: decided against the shared last_seen_at; concurrent runs on several instances each
# expire a session at most once (the second UPDATE waits for the first's row lock, then re-checks).
EXPIRE_IDLE = (
    "UPDATE sessions SET expired_at = %s WHERE expired_at IS NULL AND last_seen_at < %s "
    "RETURNING id, last_seen_at"
)
