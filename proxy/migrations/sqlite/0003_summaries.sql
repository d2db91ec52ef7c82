-- Model-written chunk summaries ([compression] summarizer = model), shared by every instance.
-- summaries: one per folded chunk, keyed by the chunk's content hash (provider, position, messages):
-- written once by the first instance whose summary call succeeded, read by all from then on.
-- fold_digests: which digests of one fold are summaries, decided by the request that made the fold
-- and kept, so every later request, after a restart and on any instance, forwards the same prefix.
CREATE TABLE summaries (
    chunk_key   TEXT PRIMARY KEY,
    session_id  TEXT,
    model       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE fold_digests (
    fold_key    TEXT PRIMARY KEY,
    summarized  TEXT NOT NULL,  -- JSON array of the chunk keys whose digest is their summary
    created_at  REAL NOT NULL
);
