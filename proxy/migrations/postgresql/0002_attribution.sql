-- Attribution, as ../sqlite/0002_attribution.sql: sessions.label (the X-Vidurai-Session header as
-- sent) and requests.tags (the X-Vidurai-Tags header as a JSON object, NULL without). tags is TEXT
-- as in SQLite, not JSONB, so that it is stored and exported exactly as written (JSONB reorders keys).
ALTER TABLE sessions ADD COLUMN label TEXT;
ALTER TABLE requests ADD COLUMN tags TEXT;
CREATE INDEX sessions_label ON sessions (label);

DROP VIEW savings_by_session;
CREATE VIEW savings_by_session AS
SELECT id                                                   AS session_id,
       label,
       tenant,
       vidurai_datetime(created_at)                         AS started,
       vidurai_datetime(last_seen_at)                       AS last_seen,
       vidurai_datetime(expired_at)                         AS expired,
       messages,
       requests,
       input_tokens,
       output_tokens,
       cache_read_tokens,
       cache_write_tokens,
       tokens_original_est,
       tokens_saved,
       vidurai_round(100.0 * tokens_saved / NULLIF(tokens_original_est, 0), 2) AS savings_pct,
       vidurai_round(cost_usd, 6)                           AS cost_usd,
       vidurai_round(cost_saved_usd, 6)                     AS cost_saved_usd
FROM sessions
ORDER BY last_seen_at DESC;

CREATE VIEW savings_by_tag AS
SELECT tag.key                                              AS tag_key,
       tag.value                                            AS tag_value,
       COUNT(*)                                             AS requests,
       COALESCE(SUM(input_tokens), 0)                       AS input_tokens,
       COALESCE(SUM(output_tokens), 0)                      AS output_tokens,
       COALESCE(SUM(cache_read_tokens), 0)                  AS cache_read_tokens,
       COALESCE(SUM(cache_write_tokens), 0)                 AS cache_write_tokens,
       COALESCE(SUM(tokens_saved), 0)                       AS tokens_saved,
       vidurai_round(COALESCE(SUM(cost_usd), 0), 6)         AS cost_usd,
       vidurai_round(COALESCE(SUM(cost_saved_usd), 0), 6)   AS cost_saved_usd
FROM requests, jsonb_each_text(requests.tags::jsonb) AS tag
GROUP BY tag.key, tag.value
ORDER BY cost_usd DESC, requests DESC;
