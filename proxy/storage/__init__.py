"""SQLite persistence: migrations, the single writer and the read queries."""

from proxy.storage.migrations import MigrationError, migrate, migrate_path
from proxy.storage.reader import ActiveSession, active_sessions, metrics_json, session_memories, totals
from proxy.storage.writer import Writer

__all__ = [
    "ActiveSession",
    "MigrationError",
    "Writer",
    "active_sessions",
    "metrics_json",
    "migrate",
    "migrate_path",
    "session_memories",
    "totals",
]
