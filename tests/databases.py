"""Test support for both storage engines: a PostgreSQL database of the test's own, records written
through the production store, reading any engine's tables from a test, and a relay that takes the
PostgreSQL server away and brings it back.

Several people run the suite at once against the same PostgreSQL server: every test gets a database
with a random name (vidurai_t_<hex>), created through the `postgres` database and dropped after it;
nothing else on the server is touched. VIDURAI_TEST_POSTGRES names the server's admin database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from proxy.records import RequestRecord, SessionRecord, Usage
from proxy.storage import is_postgresql, open_store

ADMIN_URL = os.environ.get("VIDURAI_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "vidurai_t_"


def _url_of(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def create_database() -> str:
    """A new, empty database; its URL."""
    name = PREFIX + os.urandom(6).hex()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _url_of(name)


def drop_database(url: str) -> None:
    """Drop a database made by create_database (and only such a one), closing its connections."""
    name = url.rpartition("/")[2]
    assert name.startswith(PREFIX), name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database() -> Iterator[str]:
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def request(rid: str, *, session: str | None = "s1", at: float = 1000.0, **fields: Any) -> RequestRecord:
    """An Anthropic messages request of tenant t1 (200, some usage unless `fields` say otherwise)."""
    fields = {
        "model": "claude-sonnet-4-5",
        "status": 200,
        "usage": Usage(input_tokens=100, output_tokens=20),
        **fields,
    }
    return RequestRecord(
        id=rid,
        created_at=at,
        provider="anthropic",
        endpoint="messages",
        method="POST",
        path="/v1/messages",
        session_id=session,
        tenant="t1",
        **fields,
    )


async def write_db(path: Path | str, sessions: list[SessionRecord], requests: list[RequestRecord]) -> str:
    """The records written through the production store into a fresh database (a file or a URL)."""
    writer = open_store(str(path), flush_interval=0.05)
    await writer.start()
    for session in sessions:
        writer.upsert_session(session)
    for record in requests:
        writer.add_request(record)
    await writer.close()
    return str(path)


def query(database: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts, as a user's `sqlite3 vidurai.db` or `psql` sees them, from a SQLite file or a
    PostgreSQL URL (write `?` for parameters in both)."""
    if isinstance(database, str) and is_postgresql(database):
        with psycopg.connect(database, row_factory=dict_row) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def execute(database: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement, committed, on either engine (`?` for parameters)."""
    if is_postgresql(database):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return
    conn = sqlite3.connect(database)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


async def wait_rows(
    database: str | Path, sql: str, params: tuple[Any, ...] = (), count: int = 1, within: float = 5.0
) -> list[dict[str, Any]]:
    """Poll until the query returns at least `count` rows (the writer commits in the background)."""
    deadline = time.monotonic() + within
    while True:
        rows = query(database, sql, params)
        if len(rows) >= count:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} rows after {within}s, expected {count}: {sql}")
        await asyncio.sleep(0.02)


class Relay:
    """A TCP relay to the PostgreSQL server that can be cut and restored: the server "goes away"."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
