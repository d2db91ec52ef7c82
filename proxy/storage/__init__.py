"""Storage: one store object (proxy/storage/store.py), two engines (sqlite/, postgresql/)."""

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
