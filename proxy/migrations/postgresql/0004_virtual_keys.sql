-- Virtual keys (the SQLite migration of the same name says what each column holds):
-- only the key's sha256 and the NAME of the variable holding the real provider key are stored.
CREATE TABLE virtual_keys (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    key_hash             TEXT NOT NULL UNIQUE,
    tenant               TEXT NOT NULL,
    provider             TEXT NOT NULL CHECK (provider IN ('anthropic', 'openai')),
    upstream_key_env     TEXT NOT NULL,
    requests_per_minute  BIGINT,
    tokens_per_minute    BIGINT,
    budget_usd_per_day   DOUBLE PRECISION,
    budget_usd_per_month DOUBLE PRECISION,
    created_at           DOUBLE PRECISION NOT NULL,
    updated_at           DOUBLE PRECISION NOT NULL,
    revoked_at           DOUBLE PRECISION
);
CREATE INDEX virtual_keys_tenant ON virtual_keys (tenant);
CREATE INDEX requests_tenant_created ON requests (tenant, created_at);
