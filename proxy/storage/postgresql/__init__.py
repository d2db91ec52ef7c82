"""The PostgreSQL engine of the store."""

from proxy.storage.postgresql.store import PostgresStore

__all__ = ["PostgresStore"]
