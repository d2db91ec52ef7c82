"""SQLite migrations: the schema version is `PRAGMA user_version`, set in each script's transaction."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import structlog

from proxy.storage.migrations import MigrationError, load_migrations, migrations_dir, newer_than_known

log = structlog.get_logger(__name__)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's `PRAGMA user_version`: the number of the last migration applied."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int | None = None, directory: Path | None = None) -> int:
    """Apply the pending migrations up to `target` (default: all) and return the schema version.

    `conn` must be in autocommit mode (isolation_level=None) so that each script controls its
    own transaction.
    """
    migrations = load_migrations(migrations_dir("sqlite") if directory is None else directory)
    latest = migrations[-1].version
    target = latest if target is None else target
    current = schema_version(conn)
    if current > latest:
        raise newer_than_known(current, latest)
    for migration in migrations[current:target]:
        # BEGIN IMMEDIATE takes the write lock first, so two proxies starting together
        # serialise here; the loser's CREATE fails and the version check below settles it.
        script = f"BEGIN IMMEDIATE;\n{migration.sql}\n;\nPRAGMA user_version = {migration.version};\nCOMMIT;"
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if schema_version(conn) >= migration.version:
                continue  # another process applied it meanwhile
            raise MigrationError(f"{migration.name}: {exc}") from exc
        log.info("storage.migrated", migration=migration.name, version=migration.version)
    return schema_version(conn)


# How long a start waits for other processes starting on the same file (the busy timeout, and
# the switch to WAL below).
START_WAIT_S = 10.0


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """WAL lets the dashboards and `sqlite3 vidurai.db` read while the writer commits.

    Switching needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, while another process starting at the same moment holds it (seen when three
    instances started together on a new file): so it is retried here until START_WAIT_S.
    """
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def migrate_path(path: str) -> int:
    """Open the database file, switch it to WAL and apply every pending migration."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(START_WAIT_S * 1000)}")
        _switch_to_wal(conn)
        return migrate(conn)
    finally:
        conn.close()
