"""PostgreSQL migrations: the schema version is kept in `vidurai_schema`, one row per migration,
inserted in the migration's own transaction; every instance takes the same advisory lock first, so
instances starting at once apply each migration exactly once and the others wait, then find it done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import structlog

from proxy.storage.migrations import load_migrations, migrations_dir, newer_than_known

log = structlog.get_logger(__name__)

# pg_advisory_xact_lock key shared by every Vidurai Proxy instance: "vidu" in ASCII.
LOCK_KEY = 0x76696475
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS vidurai_schema (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The number of the last migration applied (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('vidurai_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM vidurai_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any], directory: Path | None = None) -> int:
    """Apply the pending migrations, each in one transaction with its version row; the schema version.

    `conn` must be in autocommit mode, so that each migration is a transaction of its own.
    """
    migrations = load_migrations(migrations_dir("postgresql") if directory is None else directory)
    latest = migrations[-1].version
    for migration in migrations:
        with conn.transaction():
            # Held until this transaction ends: a second instance waits here, then sees the new version.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute(_VERSION_TABLE)
            current = schema_version(conn)
            if current > latest:
                raise newer_than_known(current, latest)
            if current >= migration.version:
                continue
            conn.execute(migration.sql.encode())  # no parameters: the script's statements run as one
            conn.execute(
                "INSERT INTO vidurai_schema (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
        log.info("storage.migrated", migration=migration.name, version=migration.version)
    return schema_version(conn)
