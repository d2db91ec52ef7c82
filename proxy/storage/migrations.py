"""Schema migrations: numbered SQL files per engine, applied in order, each in one transaction with
its version (the engines' modules apply them: proxy/storage/sqlite/migrations.py, .../postgresql/...)."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import attrs

_FILENAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
ENGINES = ("sqlite", "postgresql")


class MigrationError(Exception):
    """The migration files or the database's schema version cannot be reconciled."""


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir(engine: str = "sqlite") -> Path:
    """`proxy/migrations/ENGINE/`: package data, so a checkout and an installed wheel read the same files."""
    if engine not in ENGINES:
        raise ValueError(f"no migrations for engine {engine!r}")
    return Path(str(importlib.resources.files("proxy") / "migrations" / engine))


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


def newer_than_known(current: int, latest: int) -> MigrationError:
    return MigrationError(
        f"database schema version {current} is newer than this proxy knows ({latest}); "
        "upgrade the proxy or use another [storage] database"
    )
