"""A scratch PostgreSQL database for a benchmark: created with a random name, dropped afterwards.

VIDURAI_BENCH_POSTGRES names the server's admin database (default: the local server, as in tests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg

ADMIN_URL = os.environ.get("VIDURAI_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "vidurai_b_"


@contextlib.contextmanager
def scratch_database() -> Iterator[str | None]:
    """The URL of a new empty database, or None when no server answers (the figure is left out)."""
    name = PREFIX + os.urandom(6).hex()
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        yield None
        return
    try:
        yield ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
