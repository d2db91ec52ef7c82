"""The writer's sustained rows/s: a real store on a real SQLite file, and on a real PostgreSQL
database (scratch, when a server answers), while the event loop stays busy.

The request path only appends records to the writer's queue; what matters is whether the writer
thread keeps committing while the event loop holds the GIL serving requests. A busy coroutine
stands in for that load (CPU in short slices, never idle), records are enqueued as the proxy does
(one `requests` row per call, conversations spread over many sessions), and the clock stops when
the last one is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import attrs

from proxy.records import RequestRecord, Usage
from proxy.storage import open_store

from .scratch_postgres import scratch_database

SESSIONS = 1000
ENQUEUE_CHUNK = 500  # records queued per event-loop turn


@attrs.frozen
class WriterRate:
    rows: int
    idle_rows_per_s: float
    busy_rows_per_s: float
    busy_loop_share: float  # of the wall time the busy coroutine ran
    # The same into PostgreSQL (COPY and the session rollup in one transaction); None without a server.
    postgres_busy_rows_per_s: float | None = None
    postgres_idle_rows_per_s: float | None = None

    def describe(self) -> str:
        text = (
            f"Writer (bench/writer_rate.py): {self.rows:,} `requests` rows (each with its session's running "
            f"totals) committed at **{self.busy_rows_per_s:,.0f} rows/s** while the event loop was busy "
            f"{self.busy_loop_share:.0%} of the time, {self.idle_rows_per_s:,.0f} rows/s with it idle; "
            "flush_interval 0.5 s."
        )
        if self.postgres_busy_rows_per_s is None or self.postgres_idle_rows_per_s is None:
            return text + " PostgreSQL: no server answered, not measured."
        return text + (
            " Into PostgreSQL (local server, loopback): "
            f"**{self.postgres_busy_rows_per_s:,.0f} rows/s** with the loop busy, "
            f"{self.postgres_idle_rows_per_s:,.0f} rows/s idle."
        )


def _records(count: int) -> list[RequestRecord]:
    now = time.time()
    return [
        RequestRecord(
            id=os.urandom(16).hex(),
            created_at=now,
            provider="anthropic",
            endpoint="messages",
            method="POST",
            path="/v1/messages",
            session_id=f"{n % SESSIONS:024x}",
            tenant="0123456789abcdef",
            model="claude-sonnet-4-5",
            stream=n % 2 == 0,
            status=200,
            duration_ms=12.5,
            ttfb_ms=3.25,
            overhead_ms=0.4,
            usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=0, cache_write_tokens=0),
            tokens_original_est=120,
            tokens_forwarded_est=120,
            tokens_saved=0,
            messages_original=1,
            messages_forwarded=1,
            cost_usd=0.0008,
            cost_saved_usd=0.0,
        )
        for n in range(count)
    ]


async def _run(database: str, rows: int, busy: bool) -> tuple[float, float]:
    """Rows per second from the first enqueue to the last commit, and the busy loop's share of it."""
    writer = open_store(database, flush_interval=0.5)
    await writer.start()
    records = _records(rows)
    stop = asyncio.Event()
    busy_seconds = 0.0
    sample = {"messages": [{"role": "user", "content": "x" * 200}] * 5}

    async def busy_loop() -> None:
        nonlocal busy_seconds
        while not stop.is_set():
            slice_end = time.perf_counter() + 0.002
            start = time.perf_counter()
            while time.perf_counter() < slice_end:
                json.dumps(sample)
            busy_seconds += time.perf_counter() - start
            await asyncio.sleep(0)

    task = asyncio.create_task(busy_loop()) if busy else None
    started = time.perf_counter()
    for offset in range(0, rows, ENQUEUE_CHUNK):
        for record in records[offset : offset + ENQUEUE_CHUNK]:
            writer.add_request(record)
        await asyncio.sleep(0)
    while writer.health().written < rows:  # noqa: ASYNC110  # polled: the writer thread has no loop to signal
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    if task is not None:
        await task
    await writer.close()
    return rows / elapsed, busy_seconds / elapsed


async def measure(path: Path, rows: int) -> WriterRate:
    idle, _ = await _run(str(path.with_suffix(".idle.db")), rows, busy=False)
    busy, share = await _run(str(path), rows, busy=True)
    with scratch_database() as idle_url, scratch_database() as busy_url:
        if idle_url is None or busy_url is None:
            return WriterRate(rows, idle, busy, share)
        postgres_idle, _ = await _run(idle_url, rows, busy=False)
        postgres_busy, _ = await _run(busy_url, rows, busy=True)
    return WriterRate(rows, idle, busy, share, postgres_busy, postgres_idle)


def stored_requests(database: Path) -> int:
    """Rows the proxy's writer committed: evidence that it did all its work during the run."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def stored_sessions(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
