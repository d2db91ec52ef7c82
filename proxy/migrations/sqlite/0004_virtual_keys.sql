-- Virtual keys: a key the proxy hands out, with its own limits, swapped for a real provider key
-- on the way upstream. Only the key's sha256 is kept, and only the NAME of the environment
-- variable holding the real key, never the real key itself.
-- tenant: the first 16 hex characters of key_hash, the same value requests.tenant holds for
-- this key's requests (proxy/sessions.py tenant_of), so spend per key is a join.
CREATE TABLE virtual_keys (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    key_hash             TEXT NOT NULL UNIQUE,
    tenant               TEXT NOT NULL,
    provider             TEXT NOT NULL CHECK (provider IN ('anthropic', 'openai')),
    upstream_key_env     TEXT NOT NULL,
    requests_per_minute  INTEGER,
    tokens_per_minute    INTEGER,
    budget_usd_per_day   REAL,
    budget_usd_per_month REAL,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    revoked_at           REAL
);
CREATE INDEX virtual_keys_tenant ON virtual_keys (tenant);
-- Spend per tenant and window is summed from requests at startup (limits survive a restart).
CREATE INDEX requests_tenant_created ON requests (tenant, created_at);
