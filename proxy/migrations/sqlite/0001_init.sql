-- Vidurai Proxy schema, version 1.
-- Times are unix seconds (REAL, UTC); the views show them with datetime(x, 'unixepoch').
-- Applied by proxy/storage/migrations.py inside one transaction with `PRAGMA user_version = 1`.

-- One row per proxied call. Token columns are what upstream reported, normalised so that
-- input_tokens excludes cache reads and writes for both providers; NULL means "not reported".
CREATE TABLE requests (
    id                   TEXT PRIMARY KEY NOT NULL,
    created_at           REAL NOT NULL,
    session_id           TEXT,
    tenant               TEXT,
    provider             TEXT NOT NULL,           -- anthropic | openai
    endpoint             TEXT NOT NULL,           -- messages | chat_completions | count_tokens | passthrough
    method               TEXT NOT NULL,
    path                 TEXT NOT NULL,
    model                TEXT,
    stream               INTEGER NOT NULL DEFAULT 0,
    status               INTEGER,                 -- HTTP status sent to the client
    duration_ms          REAL,
    ttfb_ms              REAL,
    overhead_ms          REAL,                    -- time the proxy itself added
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    cache_read_tokens    INTEGER,
    cache_write_tokens   INTEGER,
    tokens_original_est  INTEGER,                 -- estimated input tokens as the client sent them
    tokens_forwarded_est INTEGER,                 -- estimated input tokens after compression
    tokens_saved         INTEGER,
    messages_original    INTEGER,
    messages_forwarded   INTEGER,
    cost_usd             REAL,                    -- NULL when the model has no known price
    cost_saved_usd       REAL,
    error                TEXT
);
CREATE INDEX requests_created_at ON requests (created_at);
CREATE INDEX requests_session ON requests (session_id, created_at);
CREATE INDEX requests_model ON requests (model);

-- One row per conversation; the running totals are kept by the writer in the same transaction
-- as each request row, so they always agree with `requests`.
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant             TEXT NOT NULL,             -- first 16 hex chars of sha256(API key)
    created_at         REAL NOT NULL,
    last_seen_at       REAL NOT NULL,
    expired_at         REAL,                      -- NULL while the session is active
    messages           INTEGER NOT NULL DEFAULT 0,
    requests           INTEGER NOT NULL DEFAULT 0,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    tokens_original_est INTEGER NOT NULL DEFAULT 0,
    tokens_saved       INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL,                      -- sum of the priced requests; NULL if none was
    cost_saved_usd     REAL
);
CREATE INDEX sessions_active ON sessions (expired_at, last_seen_at);
CREATE INDEX sessions_tenant ON sessions (tenant, last_seen_at);
CREATE INDEX sessions_tokens_saved ON sessions (tokens_saved);

-- Turns and folded digests the compressor keeps per session; a re-sent turn is stored once.
CREATE TABLE memories (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    position    INTEGER NOT NULL,
    role        TEXT NOT NULL,
    kind        TEXT NOT NULL,                    -- turn | digest
    importance  REAL NOT NULL,
    content     TEXT NOT NULL,
    content_sha TEXT NOT NULL,
    created_at  REAL NOT NULL,
    UNIQUE (session_id, content_sha, position)
);
CREATE INDEX memories_session_position ON memories (session_id, position);

-- Serialized Vidurai memory state; the latest row per session is what a restart restores.
CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    state      TEXT NOT NULL                      -- JSON
);
CREATE INDEX snapshots_session ON snapshots (session_id, id);

-- What the proxy decided about a session: created, compressed, restored, expired, failed open.
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    session_id TEXT,
    event      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}'         -- JSON
);
CREATE INDEX audit_session ON audit (session_id, created_at);
CREATE INDEX audit_created_at ON audit (created_at);

-- Savings views. savings_pct = tokens saved / tokens the client sent (estimated), in percent;
-- cost sums skip unpriced requests (NULL cost), and `unpriced` counts those that had usage.
CREATE VIEW savings_by_day AS
SELECT date(created_at, 'unixepoch')                        AS day,
       COUNT(*)                                             AS requests,
       COALESCE(SUM(input_tokens), 0)                       AS input_tokens,
       COALESCE(SUM(output_tokens), 0)                      AS output_tokens,
       COALESCE(SUM(cache_read_tokens), 0)                  AS cache_read_tokens,
       COALESCE(SUM(cache_write_tokens), 0)                 AS cache_write_tokens,
       COALESCE(SUM(tokens_original_est), 0)                AS tokens_original_est,
       COALESCE(SUM(tokens_saved), 0)                       AS tokens_saved,
       ROUND(100.0 * SUM(tokens_saved) / NULLIF(SUM(tokens_original_est), 0), 2) AS savings_pct,
       ROUND(TOTAL(cost_usd), 6)                            AS cost_usd,
       ROUND(TOTAL(cost_saved_usd), 6)                      AS cost_saved_usd,
       SUM(cost_usd IS NULL AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)) AS unpriced
FROM requests
GROUP BY day
ORDER BY day;

CREATE VIEW savings_by_model AS
SELECT provider,
       model,
       COUNT(*)                                             AS requests,
       COALESCE(SUM(input_tokens), 0)                       AS input_tokens,
       COALESCE(SUM(output_tokens), 0)                      AS output_tokens,
       COALESCE(SUM(cache_read_tokens), 0)                  AS cache_read_tokens,
       COALESCE(SUM(cache_write_tokens), 0)                 AS cache_write_tokens,
       COALESCE(SUM(tokens_original_est), 0)                AS tokens_original_est,
       COALESCE(SUM(tokens_saved), 0)                       AS tokens_saved,
       ROUND(100.0 * SUM(tokens_saved) / NULLIF(SUM(tokens_original_est), 0), 2) AS savings_pct,
       ROUND(TOTAL(cost_usd), 6)                            AS cost_usd,
       ROUND(TOTAL(cost_saved_usd), 6)                      AS cost_saved_usd,
       SUM(cost_usd IS NULL AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)) AS unpriced
FROM requests
GROUP BY provider, model
ORDER BY cost_usd DESC, requests DESC;

CREATE VIEW savings_by_session AS
SELECT id                                                   AS session_id,
       tenant,
       datetime(created_at, 'unixepoch')                    AS started,
       datetime(last_seen_at, 'unixepoch')                  AS last_seen,
       datetime(expired_at, 'unixepoch')                    AS expired,
       messages,
       requests,
       input_tokens,
       output_tokens,
       cache_read_tokens,
       cache_write_tokens,
       tokens_original_est,
       tokens_saved,
       ROUND(100.0 * tokens_saved / NULLIF(tokens_original_est, 0), 2) AS savings_pct,
       ROUND(cost_usd, 6)                                   AS cost_usd,
       ROUND(cost_saved_usd, 6)                             AS cost_saved_usd
FROM sessions
ORDER BY last_seen_at DESC;
