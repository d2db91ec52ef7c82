"""Schema migrations: numbered SQL files applied in order, each in one transaction with its version."""

from __future__ import annotations

import importlib.resources
import re
import sqlite3
from pathlib import Path

import attrs
import structlog

log = structlog.get_logger(__name__)

_FILENAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


class MigrationError(Exception):
    """The migration files or the database's schema version cannot be reconciled."""


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """`proxy/migrations/`: package data, so a checkout and an installed wheel read the same files."""
    return Path(str(importlib.resources.files("proxy") / "migrations"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every `NNNN_name.sql` file, checked to be numbered 1, 2, 3... without gaps."""
    directory = migrations_dir() if directory is None else directory
    found = sorted(
        (int(match.group(1)), path)
        for path in directory.glob("*.sql")
        if (match := _FILENAME.match(path.name))
    )
    migrations = []
    for expected, (version, path) in enumerate(found, start=1):
        if version != expected:
            raise MigrationError(f"{path.name}: expected migration number {expected:04d} in {directory}")
        migrations.append(Migration(version, path.name, path.read_text(encoding="utf-8")))
    if not migrations:
        raise MigrationError(f"no migrations found in {directory}")
    return migrations


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's `PRAGMA user_version`: the number of the last migration applied."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int | None = None, directory: Path | None = None) -> int:
    """Apply the pending migrations up to `target` (default: all) and return the schema version.

    `conn` must be in autocommit mode (isolation_level=None) so that each script controls its
    own transaction.
    """
    migrations = load_migrations(directory)
    latest = migrations[-1].version
    target = latest if target is None else target
    current = schema_version(conn)
    if current > latest:
        raise MigrationError(
            f"database schema version {current} is newer than this proxy knows ({latest}); "
            "upgrade the proxy or use another [storage] database"
        )
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


def migrate_path(path: str) -> int:
    """Open the database file, switch it to WAL and apply every pending migration."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        # WAL lets the dashboards and `sqlite3 vidurai.db` read while the writer commits.
        conn.execute("PRAGMA journal_mode = WAL")
        return migrate(conn)
    finally:
        conn.close()
