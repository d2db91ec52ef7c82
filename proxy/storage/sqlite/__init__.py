"""The SQLite engine of the store."""

from proxy.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
