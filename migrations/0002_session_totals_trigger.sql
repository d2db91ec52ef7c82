-- Each stored request adds to its session's running totals inside SQLite: the writer then runs
-- one statement per request instead of two, and the totals agree with `requests` whoever inserts.
-- AFTER INSERT fires only for rows actually inserted, so a request id stored twice (a retried
-- batch; INSERT ... ON CONFLICT DO NOTHING) is counted once. The first request of a
-- conversation creates its session row; a request means the session is live (not expired).
-- SUM-like: NULL costs are skipped, not zeroed.
CREATE TRIGGER requests_add_to_session AFTER INSERT ON requests
WHEN NEW.session_id IS NOT NULL
BEGIN
    INSERT INTO sessions (id, tenant, created_at, last_seen_at, messages, requests, input_tokens,
                          output_tokens, cache_read_tokens, cache_write_tokens,
                          tokens_original_est, tokens_saved, cost_usd, cost_saved_usd)
    VALUES (NEW.session_id, COALESCE(NEW.tenant, ''), NEW.created_at, NEW.created_at,
            COALESCE(NEW.messages_original, 0), 1, COALESCE(NEW.input_tokens, 0),
            COALESCE(NEW.output_tokens, 0), COALESCE(NEW.cache_read_tokens, 0),
            COALESCE(NEW.cache_write_tokens, 0), COALESCE(NEW.tokens_original_est, 0),
            COALESCE(NEW.tokens_saved, 0), NEW.cost_usd, NEW.cost_saved_usd)
    ON CONFLICT (id) DO UPDATE SET
        last_seen_at        = max(last_seen_at, excluded.last_seen_at),
        messages            = CASE WHEN NEW.messages_original IS NULL THEN messages
                                   ELSE excluded.messages END,
        expired_at          = NULL,
        requests            = requests + 1,
        input_tokens        = input_tokens + excluded.input_tokens,
        output_tokens       = output_tokens + excluded.output_tokens,
        cache_read_tokens   = cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens  = cache_write_tokens + excluded.cache_write_tokens,
        tokens_original_est = tokens_original_est + excluded.tokens_original_est,
        tokens_saved        = tokens_saved + excluded.tokens_saved,
        cost_usd            = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd
                                   ELSE COALESCE(cost_usd, 0) + excluded.cost_usd END,
        cost_saved_usd      = CASE WHEN excluded.cost_saved_usd IS NULL THEN cost_saved_usd
                                   ELSE COALESCE(cost_saved_usd, 0) + excluded.cost_saved_usd END;
END;
