"""Storage: one store object (proxy/storage/store.py), two engines (sqlite/, postgresql/).

Layout: `store.py` (the Store protocol, open_store), `writer.py` (the queue and its thread, shared
by the engines), `stepaside.py` (the event loop giving that thread the GIL when it falls behind),
`rows.py` (records to parameter tuples), `rollup.py` (session totals per batch), `metrics.py` (the
JSON the reads return), `migrations.py` (the numbered files), and the stores read and written at
once rather than through the writer: `summaries.py` (chunk summaries, fold decisions) and
`limits.py` (virtual keys, spend and refusals), each thread on its own connection
(`connections.py`); each engine has its `statements.py`, `batches.py`, `reader.py`, `migrations.py`,
`connections.py`, `summaries.py`, `limits.py` and `store.py`, and the SQL dialect stays there.

A new table: a migration with the same number in proxy/migrations/sqlite/ and .../postgresql/, a
record type in proxy/records.py, its field in rows.Tables and its branch in rows.split, and its
statement in each engine's statements.py and batches.write; its reads on the Store protocol and in
each engine's reader.py.
"""

from proxy.storage.metrics import ActiveSession, Filter, StoredSession
from proxy.storage.migrations import MigrationError
from proxy.storage.store import StorageHealth, Store, StoreError, SummaryStore, is_postgresql, open_store

__all__ = [
    "ActiveSession",
    "Filter",
    "MigrationError",
    "StorageHealth",
    "Store",
    "StoreError",
    "StoredSession",
    "SummaryStore",
    "is_postgresql",
    "open_store",
]
