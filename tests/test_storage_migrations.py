"""Migrations: an empty database and one at every older version reach the latest schema."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from proxy.storage.migrations import MigrationError, load_migrations, migrations_dir
from proxy.storage.sqlite.migrations import migrate, migrate_path, schema_version

LATEST = load_migrations()[-1].version
TABLES = {"requests", "sessions", "memories", "snapshots", "audit"}
VIEWS = {"savings_by_day", "savings_by_model", "savings_by_session", "savings_by_tag"}


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def schema(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's and view's columns, and every index with its columns."""
    names = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    result = {}
    for kind, name in names:
        pragma = "index_info" if kind == "index" else "table_info"
        result[f"{kind}:{name}"] = conn.execute(f"PRAGMA {pragma}({name})").fetchall()
    return result


def seed_every_table(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Insert one row with every column set into each table; return what was inserted."""
    typed = {"INTEGER": 7, "REAL": 1.5, "TEXT": "seed"}
    seeded = {}
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
        row = {name: typed.get(decl.upper(), "seed") for _, name, decl, *_ in columns}
        conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        seeded[table] = row
    return seeded


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, LATEST + 1))
    assert (migrations_dir() / "0001_init.sql").is_file()


def test_empty_database_reaches_latest_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "vidurai.db"
    assert migrate_path(str(path)) == LATEST
    conn = connect(path)
    assert schema_version(conn) == LATEST
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    objects = dict(conn.execute("SELECT name, type FROM sqlite_master").fetchall())
    assert {name for name, kind in objects.items() if kind == "table"} >= TABLES
    assert {name for name, kind in objects.items() if kind == "view"} >= VIEWS
    for view in VIEWS:
        assert conn.execute(f"SELECT * FROM {view}").fetchall() == []
    conn.close()


@pytest.mark.parametrize("start", range(LATEST))
def test_every_older_version_migrates_to_latest_keeping_rows(tmp_path: Path, start: int) -> None:
    fresh = connect(tmp_path / "fresh.db")
    migrate(fresh)
    expected = schema(fresh)
    fresh.close()

    conn = connect(tmp_path / "old.db")
    assert migrate(conn, target=start) == start
    seeded = seed_every_table(conn)
    assert migrate(conn) == LATEST
    assert schema(conn) == expected
    conn.row_factory = sqlite3.Row
    for table, row in seeded.items():
        stored = conn.execute(f"SELECT * FROM {table}").fetchall()
        assert len(stored) == 1
        assert {key: stored[0][key] for key in row} == row
    conn.close()


def test_migrating_again_changes_nothing(tmp_path: Path) -> None:
    conn = connect(tmp_path / "vidurai.db")
    migrate(conn)
    before = schema(conn)
    assert migrate(conn) == LATEST
    assert schema(conn) == before
    conn.close()


def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    broken = directory / f"{LATEST + 1:04d}_broken.sql"
    broken.write_text("CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    conn = connect(tmp_path / "vidurai.db")
    with pytest.raises(MigrationError, match="broken"):
        migrate(conn, directory=directory)
    assert schema_version(conn) == LATEST
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    assert not conn.in_transaction
    conn.close()


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "vidurai.db")
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(MigrationError, match="newer"):
        migrate(conn)
    conn.close()


def test_a_gap_in_the_numbering_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    (directory / f"{LATEST + 2:04d}_skipped.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=f"{LATEST + 1:04d}"):
        load_migrations(directory)
