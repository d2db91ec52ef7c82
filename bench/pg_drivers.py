"""asyncpg or psycopg 3 for the PostgreSQL engine: the writer's batch and /metrics.json, both ways.

`python -m bench.pg_drivers` (a local PostgreSQL server; scratch databases, dropped afterwards).

Write: batches of BATCH `requests` rows over SESSIONS sessions, each batch one transaction with the
session totals rollup, as the writer commits them: psycopg's COPY (the engine's own code,
proxy/storage/postgresql/batches.py), psycopg's multi-row executemany INSERT, and asyncpg's
copy_records_to_table with its executemany rollup. Figures: rows/s of wall time, and this process's
CPU per 1,000 rows (the driver's own cost, what the proxy's writer thread pays; the least disturbed
by other load on the machine). Read: the whole /metrics.json (the engine's queries, proxy/storage/
postgresql/reader.py) over ROWS_FOR_READS requests, milliseconds per call (median) with each driver.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
from psycopg.rows import dict_row

from bench.scratch_postgres import scratch_database
from bench.writer_rate import _records
from proxy.storage import rollup
from proxy.storage.postgresql import batches, reader
from proxy.storage.postgresql.migrations import migrate
from proxy.storage.postgresql.statements import ADD_TO_SESSION, STORED_REQUESTS
from proxy.storage.rows import REQUEST_COLUMNS, Tables, request_params

BATCH = 500  # the writer's wake-up size (proxy/storage/writer.py BATCH_SIZE)
SESSIONS = 50
ROWS_FOR_READS = 50_000
_INSERT_REQUESTS = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join(['%s'] * len(REQUEST_COLUMNS))})"
)


def _dollar(sql: str) -> str:
    """psycopg's %s placeholders as asyncpg's $1, $2, ..."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"%s", number, sql)


def _batches(count: int) -> list[list[tuple[Any, ...]]]:
    rows = [request_params(r) for r in _records(count)]
    for i, row in enumerate(rows):  # SESSIONS sessions per batch, as a busy team's traffic
        rows[i] = (*row[:2], f"{i % SESSIONS:024x}", *row[3:])
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]


def _timed(body: Callable[[], None], rows: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    body()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return rows / wall, 1000 * 1000 * cpu / rows  # rows/s, CPU ms per 1,000 rows


def psycopg_copy(url: str, work: list[list[tuple[Any, ...]]]) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)

        def run() -> None:
            for batch in work:
                with conn.transaction():
                    batches.write(conn, Tables(requests=batch))

        return _timed(run, sum(map(len, work)))


def psycopg_insert(url: str, work: list[list[tuple[Any, ...]]]) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)

        def run() -> None:
            for batch in work:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(STORED_REQUESTS, ([row[rollup.ID] for row in batch],))
                    fresh = rollup.unseen(batch, {found for (found,) in cur.fetchall()})
                    totals = sorted(rollup.session_totals(fresh))
                    cur.executemany(ADD_TO_SESSION, [(*t, t[rollup.MESSAGES_AT]) for t in totals])
                    cur.executemany(_INSERT_REQUESTS, fresh)

        return _timed(run, sum(map(len, work)))


async def _asyncpg_copy(url: str, work: list[list[tuple[Any, ...]]]) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    conn = await asyncpg.connect(url)
    add_to_session, stored = _dollar(ADD_TO_SESSION), _dollar(STORED_REQUESTS)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in work:
            async with conn.transaction():
                found = await conn.fetch(stored, [row[rollup.ID] for row in batch])
                fresh = rollup.unseen(batch, {r[0] for r in found})
                totals = sorted(rollup.session_totals(fresh))
                await conn.executemany(add_to_session, [(*t, t[rollup.MESSAGES_AT]) for t in totals])
                await conn.copy_records_to_table("requests", records=fresh, columns=list(REQUEST_COLUMNS))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await conn.close()
    rows = sum(map(len, work))
    return rows / wall, 1000 * 1000 * cpu / rows


class _AsyncpgCursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def fetchall(self) -> list[dict[str, Any]]:
        return self.rows


class _AsyncpgAsPsycopg:
    """Just enough of psycopg's AsyncConnection for reader.metrics_json to run its queries on asyncpg."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    def transaction(self) -> Any:
        return self.conn.transaction(isolation="repeatable_read", readonly=True)

    async def execute(self, sql: str, params: Any = ()) -> _AsyncpgCursor:
        if sql.startswith("SET TRANSACTION"):
            return _AsyncpgCursor([])  # asyncpg's transaction() has set it
        rows = await self.conn.fetch(_dollar(sql), *params)
        return _AsyncpgCursor([dict(r) for r in rows])


async def _metrics_ms(url: str, rounds: int) -> tuple[float, float]:
    psy = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    apg = await asyncpg.connect(url)
    timings: dict[str, list[float]] = {"psycopg": [], "asyncpg": []}
    try:
        now = time.time()
        expected = await reader.metrics_json(psy, now)
        assert await reader.metrics_json(_AsyncpgAsPsycopg(apg), now) == expected  # type: ignore[arg-type]
        for _ in range(rounds):
            for name, conn in (("psycopg", psy), ("asyncpg", _AsyncpgAsPsycopg(apg))):
                started = time.perf_counter()
                await reader.metrics_json(conn, now)  # type: ignore[arg-type]
                timings[name].append(1000 * (time.perf_counter() - started))
    finally:
        await psy.close()
        await apg.close()
    return statistics.median(timings["psycopg"]), statistics.median(timings["asyncpg"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="request rows written per driver")
    parser.add_argument("--rounds", type=int, default=20, help="/metrics.json calls per driver")
    args = parser.parse_args(argv)
    work = _batches(args.rows)
    results: dict[str, tuple[float, float]] = {}
    for name, write in (
        ("psycopg 3, COPY (the engine)", psycopg_copy),
        ("psycopg 3, executemany INSERT", psycopg_insert),
        ("asyncpg, copy_records_to_table", lambda url, w: asyncio.run(_asyncpg_copy(url, w))),
    ):
        with scratch_database() as url:
            if url is None:
                print("no PostgreSQL server answered (VIDURAI_BENCH_POSTGRES)")
                return 1
            results[name] = write(url, work)
    with scratch_database() as url:
        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            for batch in _batches(ROWS_FOR_READS):
                with conn.transaction():
                    batches.write(conn, Tables(requests=batch))
        psycopg_ms, asyncpg_ms = asyncio.run(_metrics_ms(url, args.rounds))
    print(
        "### PostgreSQL drivers (`python -m bench.pg_drivers`)\n\n"
        f"{args.rows:,} `requests` rows in batches of {BATCH} over {SESSIONS} sessions, each batch one "
        "transaction with the session rollup; local "
        f"PostgreSQL over loopback, psycopg {psycopg.__version__}, asyncpg {asyncpg.__version__}.\n\n"
        "| Write path | rows/s | client CPU ms per 1,000 rows |\n|---|---:|---:|"
    )
    for name, (rate, cpu) in results.items():
        print(f"| {name} | {rate:,.0f} | {cpu:.1f} |")
    print(
        f"\n/metrics.json over {ROWS_FOR_READS:,} requests, median of {args.rounds}: "
        f"psycopg {psycopg_ms:.1f} ms, asyncpg {asyncpg_ms:.1f} ms (the same queries and the same JSON)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
