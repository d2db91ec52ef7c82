"""The single writer: batching, flush on close, visibility, session totals, bad rows, crashes.

What every engine must do runs on both (the `database` fixture: SQLite, then PostgreSQL); what only
a file can suffer (locks, deletion, a killed process) runs on SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from proxy.records import MemoryRow, SessionRecord, Usage
from proxy.storage import Store, open_store
from proxy.storage.rows import SNAPSHOTS_KEPT
from proxy.storage.sqlite import SqliteStore
from tests.databases import query, request

ROOT = Path(__file__).resolve().parent.parent


def rows(path: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    return tmp_path / "vidurai.db"


@pytest.fixture
async def writer(db: Path) -> AsyncIterator[SqliteStore]:
    w = SqliteStore(str(db), flush_interval=0.05)
    await w.start()
    yield w
    await w.close()


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A started store on each engine in turn."""
    w = open_store(database, flush_interval=0.05)
    await w.start()
    yield w
    await w.close()


def count(database: str, sql: str) -> int:
    return int(query(database, sql)[0]["n"])


async def test_rows_are_batched_and_flushed_on_close(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=30)
    await w.start()
    for i in range(5):
        w.add_request(request(f"r{i}"))
    await asyncio.sleep(0.05)
    assert w.queued == 5
    assert rows(db, "SELECT COUNT(*) FROM requests")[0][0] == 0  # nothing before the flush
    await w.close()
    assert rows(db, "SELECT COUNT(*) FROM requests")[0][0] == 5
    assert w.rows_written == 5


async def test_a_second_connection_sees_rows_within_the_flush_interval(db: Path, writer: SqliteStore) -> None:
    writer.add_request(request("r1"))
    started = time.monotonic()
    while not rows(db, "SELECT id FROM requests"):
        assert time.monotonic() - started < 1.0, "row not visible after 1 s"
        await asyncio.sleep(0.01)
    assert time.monotonic() - started < writer.flush_interval + 0.5


async def test_rows_are_committed_while_the_event_loop_is_blocked(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=0.1)
    await w.start()
    for i in range(200):
        w.add_request(request(f"r{i}"))
    # The loop does not run for a second (a long synchronous step): the writer's own thread commits.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and rows(db, "SELECT COUNT(*) FROM requests")[0][0] < 200:
        time.sleep(0.02)  # noqa: ASYNC251  # blocking on purpose
    assert rows(db, "SELECT COUNT(*) FROM requests")[0][0] == 200
    await w.close()


async def test_rows_are_committed_while_the_event_loop_never_waits(database: str) -> None:
    """A task keeps the GIL busy and yields only to the loop (sleep(0) every 2 ms), as a saturated
    loop does: the loop releases the GIL between callbacks and takes it straight back, so without
    stepping aside for the writer, the writer thread committed nothing in 30 s on a quiet machine."""
    store = open_store(database, flush_interval=0.1)
    await store.start()
    stop = asyncio.Event()
    sample = {"messages": [{"role": "user", "content": "x" * 200}] * 5}

    async def busy() -> None:
        while not stop.is_set():
            spin_until = time.perf_counter() + 0.002
            while time.perf_counter() < spin_until:
                json.dumps(sample)
            await asyncio.sleep(0)

    spinning = asyncio.create_task(busy())
    for i in range(5000):
        store.add_request(request(f"r{i}", session=f"s{i % 50}"))
        if i % 500 == 0:
            await asyncio.sleep(0)
    deadline = time.monotonic() + 10.0
    while store.health().written < 5000 and time.monotonic() < deadline:  # noqa: ASYNC110  # no loop to signal
        await asyncio.sleep(0.005)
    stop.set()
    await spinning
    health = store.health()
    await store.close()
    assert health.written == 5000, f"{health.written} of 5000 rows committed in 10 s"
    assert count(database, "SELECT COUNT(*) AS n FROM requests") == 5000


async def test_a_writer_waiting_on_a_lock_is_not_given_the_loop(db: Path) -> None:
    """The loop steps aside only for a writer that uses the time: one blocked on the database gets a
    slice, then none for a flush interval."""
    w = SqliteStore(str(db), flush_interval=0.5, busy_timeout_ms=3000)
    await w.start()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    w.add_request(request("r1"))
    await asyncio.sleep(2.0)  # the writer waits for the lock all along (its busy timeout is 3 s)
    yielded = w.health().loop_yielded_s
    holder.execute("ROLLBACK")
    holder.close()
    await w.close()
    assert rows(db, "SELECT COUNT(*) FROM requests")[0][0] == 1
    # Slices all along would have been about 1 s; three per flush interval are under 0.1 s.
    assert yielded < 0.15, f"the loop stood aside {yielded:.3f} s for a writer that could not use it"


async def test_request_columns_round_trip(database: str, store: Store) -> None:
    record = request(
        "r1",
        usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=300, cache_write_tokens=40),
        stream=True,
        duration_ms=812.5,
        ttfb_ms=120.0,
        overhead_ms=1.25,
        tokens_original_est=5000,
        tokens_forwarded_est=1000,
        tokens_saved=4000,
        messages_original=30,
        messages_forwarded=9,
        cost_usd=0.0012,
        cost_saved_usd=0.012,
        error=None,
        tags={"user": "alice", "team": "payments"},
    )
    store.add_request(record)
    await store.flush()
    (row,) = query(database, "SELECT * FROM requests")
    assert row == {
        "id": "r1",
        "created_at": 1000.0,
        "session_id": "s1",
        "tenant": "t1",
        "provider": "anthropic",
        "endpoint": "messages",
        "method": "POST",
        "path": "/v1/messages",
        "model": "claude-sonnet-4-5",
        "stream": 1,
        "status": 200,
        "duration_ms": 812.5,
        "ttfb_ms": 120.0,
        "overhead_ms": 1.25,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 300,
        "cache_write_tokens": 40,
        "tokens_original_est": 5000,
        "tokens_forwarded_est": 1000,
        "tokens_saved": 4000,
        "messages_original": 30,
        "messages_forwarded": 9,
        "cost_usd": 0.0012,
        "cost_saved_usd": 0.012,
        "error": None,
        "tags": '{"team": "payments", "user": "alice"}',
    }


async def test_session_totals_follow_its_requests(database: str, store: Store) -> None:
    store.upsert_session(
        SessionRecord(id="s1", tenant="t1", created_at=900.0, last_seen_at=900.0, messages=2)
    )
    store.add_request(
        request("r1", at=1000.0, tokens_original_est=1000, tokens_saved=0, cost_usd=0.10, cost_saved_usd=0.0)
    )
    store.add_request(
        request(
            "r2",
            at=1010.0,
            tokens_original_est=3000,
            tokens_saved=2000,
            usage=Usage(50, 10, 400, 30),
            cost_usd=0.05,
            cost_saved_usd=0.006,
        )
    )
    store.add_request(
        request("r3", at=1020.0, usage=Usage(), error="upstream timeout", status=504)
    )  # no usage, unpriced
    store.add_request(request("r2", at=1010.0, cost_usd=9.0))  # a duplicate id is not counted
    store.upsert_session(
        SessionRecord(id="s1", tenant="t1", created_at=900.0, last_seen_at=1020.0, messages=6, label="ci-42")
    )
    await store.flush()
    (session,) = query(database, "SELECT * FROM sessions")
    assert session == {
        "id": "s1",
        "tenant": "t1",
        "created_at": 900.0,
        "last_seen_at": 1020.0,
        "expired_at": None,
        "messages": 6,
        "requests": 3,
        "input_tokens": 150,
        "output_tokens": 30,
        "cache_read_tokens": 400,
        "cache_write_tokens": 30,
        "tokens_original_est": 4000,
        "tokens_saved": 2000,
        "cost_usd": pytest.approx(0.15),
        "cost_saved_usd": pytest.approx(0.006),
        "label": "ci-42",
    }
    assert count(database, "SELECT COUNT(*) AS n FROM requests") == 3

    store.upsert_session(
        SessionRecord(
            id="s1", tenant="t1", created_at=900.0, last_seen_at=1020.0, messages=6, expired_at=5000.0
        )
    )
    await store.flush()
    assert query(database, "SELECT expired_at FROM sessions") == [{"expired_at": 5000.0}]


async def test_a_request_before_its_session_creates_it_and_unpriced_cost_stays_null(
    database: str, store: Store
) -> None:
    store.add_request(request("r1", session="s2", at=1000.0, cost_usd=None))
    store.add_request(request("r2", session=None, at=1001.0))  # no session: no session row
    await store.flush()
    (session,) = query(database, "SELECT * FROM sessions")
    assert (session["id"], session["tenant"], session["requests"]) == ("s2", "t1", 1)
    assert session["cost_usd"] is None  # unknown cost is not 0
    store.upsert_session(
        SessionRecord(id="s2", tenant="t1", created_at=990.0, last_seen_at=1000.0, messages=12)
    )
    await store.flush()
    (session,) = query(database, "SELECT * FROM sessions")
    assert (session["created_at"], session["last_seen_at"], session["messages"]) == (990.0, 1000.0, 12)


async def test_memories_are_stored_once(database: str, store: Store) -> None:
    turn = MemoryRow(
        session_id="s1",
        position=0,
        role="user",
        kind="turn",
        importance=0.7,
        content="hello",
        content_sha="a" * 64,
        created_at=1000.0,
    )
    later = MemoryRow(
        session_id="s1",
        position=4,
        role="user",
        kind="turn",
        importance=0.7,
        content="hello",
        content_sha="a" * 64,
        created_at=1001.0,
    )
    store.add_memories([turn, later])
    store.add_memories([turn])  # re-sent turn
    await store.flush()
    assert [r["position"] for r in query(database, "SELECT position FROM memories ORDER BY position")] == [
        0,
        4,
    ]


async def test_snapshots_keep_the_latest_few(database: str, store: Store) -> None:
    for i in range(SNAPSHOTS_KEPT + 3):
        store.add_snapshot("s1", f'{{"n": {i}}}', at=1000.0 + i)
    store.add_snapshot("s2", '{"other": true}', at=1000.0)
    await store.flush()
    states = [
        r["state"] for r in query(database, "SELECT state FROM snapshots WHERE session_id = 's1' ORDER BY id")
    ]
    assert states == [f'{{"n": {i}}}' for i in range(3, SNAPSHOTS_KEPT + 3)]
    assert count(database, "SELECT COUNT(*) AS n FROM snapshots WHERE session_id = 's2'") == 1


async def test_audit_rows_store_json_detail(database: str, store: Store) -> None:
    store.add_audit(
        "s1", "compressed", {"messages_folded": 20, "tokens_before": 9000, "path": Path("x")}, at=1000.0
    )
    store.add_audit(None, "startup", {}, at=999.0)
    await store.flush()
    got = [
        tuple(r.values())
        for r in query(database, "SELECT session_id, event, detail FROM audit ORDER BY created_at")
    ]
    assert got == [
        (None, "startup", "{}"),
        ("s1", "compressed", '{"messages_folded": 20, "path": "x", "tokens_before": 9000}'),
    ]


async def test_a_bad_row_is_logged_and_the_others_are_kept(database: str, store: Store) -> None:
    store.add_request(request("good-1"))
    store.add_request(request(None))  # type: ignore[arg-type]  # id NOT NULL
    store.add_request(request("bad-type", model={"not": "a string"}))
    store.add_request(request("good-2"))
    with capture_logs() as logs:
        await store.flush()
    ids = [r["id"] for r in query(database, "SELECT id FROM requests ORDER BY id")]
    assert ids == ["good-1", "good-2"]
    rejected = [e for e in logs if e["event"] == "storage.row_rejected"]
    assert len(rejected) == 2 and rejected[0]["log_level"] == "error"
    assert query(database, "SELECT requests FROM sessions") == [{"requests": 2}]  # rejected rows not counted
    assert (store.health().written, store.health().rejected) == (2, 2)


async def test_a_locked_database_keeps_the_rows_logs_once_and_recovers(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=30, busy_timeout_ms=50)
    await w.start()
    w.add_request(request("r1"))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with capture_logs() as logs:
            assert await w.flush() is False
            w.add_request(request("r2"))
            assert await w.flush() is False  # a retry of the same incident is not logged again
        assert [e["event"] for e in logs] == ["storage.unwritable"]
        assert "locked" in logs[0]["error"]
        health = w.health()
        assert (health.writable, health.queued, health.dropped) == (False, 2, 0)
        assert health.last_error is not None and "locked" in health.last_error
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with capture_logs() as logs:
        assert await w.flush() is True
    assert [e["event"] for e in logs] == ["storage.recovered"]
    assert w.health().writable and w.queued == 0
    await w.close()
    assert [r["id"] for r in rows(db, "SELECT id FROM requests ORDER BY id")] == ["r1", "r2"]


async def test_past_the_queue_limit_the_oldest_rows_are_dropped_and_counted(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=30, busy_timeout_ms=50, max_queued=3)
    await w.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        w.add_request(request("r0"))
        assert await w.flush() is False
        with capture_logs() as logs:
            for i in range(1, 6):
                w.add_request(request(f"r{i}"))
        assert [e["event"] for e in logs] == ["storage.queue_full"]  # once, not per row
        assert (w.queued, w.health().dropped) == (3, 3)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await w.close()
    assert [r["id"] for r in rows(db, "SELECT id FROM requests ORDER BY id")] == ["r3", "r4", "r5"]


async def test_a_stop_waits_shutdown_timeout_then_counts_the_rows_not_written(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=30, busy_timeout_ms=50, shutdown_timeout=0.5)
    await w.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for i in range(7):
            w.add_request(request(f"r{i}"))
        started = time.monotonic()
        with capture_logs() as logs:
            await w.close()
        assert 0.4 < time.monotonic() - started < 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    unwritten = [e for e in logs if e["event"] == "storage.unwritten_on_close"]
    assert len(unwritten) == 1 and unwritten[0]["rows"] == 7
    assert w.health().dropped == 7
    assert rows(db, "SELECT COUNT(*) FROM requests")[0][0] == 0


async def test_a_deleted_database_directory_is_noticed_and_a_new_one_is_written(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    db = directory / "vidurai.db"
    w = SqliteStore(str(db), flush_interval=30)
    await w.start()
    w.add_request(request("before"))
    assert await w.flush() is True
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    w.add_request(request("while-gone"))
    with capture_logs() as logs:
        assert await w.flush() is False  # not committed into the unlinked file
    assert [e["event"] for e in logs] == ["storage.unwritable"]
    assert not w.health().writable and w.queued == 1
    directory.mkdir()
    assert await w.flush() is True
    await w.close()
    assert [r["id"] for r in rows(db, "SELECT id FROM requests")] == ["while-gone"]


async def test_enqueue_after_close_is_dropped_with_a_warning(db: Path) -> None:
    w = SqliteStore(str(db), flush_interval=0.05)
    await w.start()
    await w.close()
    with capture_logs() as logs:
        w.add_request(request("late"))
    assert logs[0]["event"] == "storage.enqueue_after_close"
    await w.close()  # closing twice is harmless


CRASH_SCRIPT = """
import asyncio, sys, time
from proxy.records import RequestRecord
from proxy.storage.sqlite import SqliteStore

async def main():
    w = SqliteStore(sys.argv[1], flush_interval=float(sys.argv[2]))
    await w.start()
    print("ready", file=sys.stderr, flush=True)
    i = 0
    while True:
        w.add_request(RequestRecord(id=str(i), created_at=time.time(), provider="openai",
                                    endpoint="chat_completions", method="POST",
                                    path="/v1/chat/completions"))
        i += 1
        await asyncio.sleep(0.005)

asyncio.run(main())
"""


async def test_kill_9_loses_at_most_the_last_flush_interval(db: Path, tmp_path: Path) -> None:
    flush_interval = 0.2
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(db),
        str(flush_interval),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        assert await asyncio.wait_for(proc.stderr.readline(), timeout=10) == b"ready\n"
        await asyncio.sleep(1.0)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    count, newest = rows(db, "SELECT COUNT(*), MAX(created_at) FROM requests")[0]
    assert count > 50
    # Rows enqueued up to one flush interval (plus scheduling slack) before the kill survive.
    assert killed_at - newest < flush_interval + 0.3
