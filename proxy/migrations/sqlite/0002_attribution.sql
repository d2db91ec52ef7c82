-- Attribution: who a conversation or a request is for, as the client named it.
-- sessions.label: the X-Vidurai-Session header as sent (the id stays its tenant-scoped hash).
-- requests.tags: the X-Vidurai-Tags header as a JSON object ({"team": "payments"}), NULL without.
ALTER TABLE sessions ADD COLUMN label TEXT;
ALTER TABLE requests ADD COLUMN tags TEXT;
CREATE INDEX sessions_label ON sessions (label);

DROP VIEW savings_by_session;
CREATE VIEW savings_by_session AS
SELECT id                                                   AS session_id,
       label,
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

-- Usage and cost per tag (a request with two tags counts under each).
CREATE VIEW savings_by_tag AS
SELECT tag.key                                              AS tag_key,
       tag.value                                            AS tag_value,
       COUNT(*)                                             AS requests,
       COALESCE(SUM(input_tokens), 0)                       AS input_tokens,
       COALESCE(SUM(output_tokens), 0)                      AS output_tokens,
       COALESCE(SUM(cache_read_tokens), 0)                  AS cache_read_tokens,
       COALESCE(SUM(cache_write_tokens), 0)                 AS cache_write_tokens,
       COALESCE(SUM(tokens_saved), 0)                       AS tokens_saved,
       ROUND(TOTAL(cost_usd), 6)                            AS cost_usd,
       ROUND(TOTAL(cost_saved_usd), 6)                      AS cost_saved_usd
FROM requests, json_each(requests.tags) AS tag
GROUP BY tag.key, tag.value
ORDER BY cost_usd DESC, requests DESC;
