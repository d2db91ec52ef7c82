"""The PostgreSQL engine against a real server: migrations under concurrent starts (SQLite's too),
the same schema and the same answers as SQLite, expiry shared by instances, the writer through an
outage."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from structlog.testing import capture_logs

from proxy.records import MemoryRow, RequestRecord, SessionRecord, Usage
from proxy.storage import Filter, MigrationError, Store, open_store
from proxy.storage.migrations import load_migrations, migrations_dir
from proxy.storage.postgresql import batches
from proxy.storage.postgresql.migrations import migrate
from proxy.storage.rows import split
from tests.conftest import ANTHROPIC_KEY, ProxyFactory
from tests.databases import Relay, query, wait_rows

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_767_225_630.0  # 2026-01-01 00:00:30 UTC
LATEST = load_migrations(migrations_dir("postgresql"))[-1].version


def request(rid: str, at: float, session: str | None, **fields: Any) -> RequestRecord:
    return RequestRecord(
        id=rid,
        created_at=at,
        provider=fields.pop("provider", "anthropic"),
        endpoint="messages",
        method="POST",
        path="/v1/messages",
        session_id=session,
        tenant="t1",
        model=fields.pop("model", "claude-sonnet-4-5"),
        status=fields.pop("status", 200),
        **fields,
    )


def same_records(store: Store) -> None:
    """A mix that exercises every part of /metrics.json: sessions, tags, errors, unpriced, NULLs."""
    store.upsert_session(SessionRecord("s1", "t1", NOW - 3000, NOW - 100, messages=14, label="Payments"))
    store.upsert_session(SessionRecord("s2", "t1", NOW - 2000, NOW - 50, messages=3))
    store.upsert_session(SessionRecord("old", "t2", NOW - 9000, NOW - 8000, expired_at=NOW - 4000))
    for i in range(70):  # more than recent_requests shows, some sharing a created_at
        store.add_request(
            request(
                f"r{i:03d}",
                NOW - 3500 + (i // 2) * 50,
                ("s1", "s2", None)[i % 3],
                provider=("anthropic", "openai")[i % 2],
                model=(None, "claude-sonnet-4-5", "gpt-4o", "Mystery")[i % 4],
                usage=Usage(100 + i, 20, i % 5 or None, 3) if i % 7 else Usage(),
                tokens_original_est=1000 + i,
                tokens_forwarded_est=700,
                tokens_saved=300 + i,
                cost_usd=None if i % 4 == 3 else 0.001 * i + 1e-7,
                cost_saved_usd=0.0003 * i,
                duration_ms=10.0 + i / 3,
                overhead_ms=1.0 + i / 7 if i % 2 else None,
                status=(200, 200, 502)[i % 3],
                error="upstream unreachable" if i % 9 == 0 else None,
                tags={"team": ("pay", "Ops", "ops")[i % 3], "env": "prod"} if i % 2 else None,
            )
        )
    store.add_snapshot("s1", '{"v": 1}', NOW - 200)
    store.add_memories([MemoryRow("s1", 0, "user", "digest", 0.9, "first", "a" * 64, NOW - 300)])
    store.add_audit("s1", "created", {"tenant": "t1"}, NOW - 3000)


@pytest.fixture
async def both(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """The same records written through a SQLite store and a PostgreSQL store."""
    stores = (open_store(str(tmp_path / "vidurai.db")), open_store(postgres_url))
    for store in stores:
        await store.start()
        same_records(store)
        assert await store.flush()
    yield stores
    for store in stores:
        await store.close()


async def test_the_same_records_give_the_same_metrics_json_on_both_engines(both: tuple[Store, Store]) -> None:
    sqlite, postgres = both
    for where in (
        None,
        Filter(session="Payments"),
        Filter(session="s2"),
        Filter(tag=("team", "ops")),
        Filter(session="s1", tag=("env", "prod")),
    ):
        expected = await sqlite.metrics_json(now=NOW, where=where)
        assert expected["totals"]["requests"] > 0
        assert await postgres.metrics_json(now=NOW, where=where) == expected, where
    assert await postgres.totals() == await sqlite.totals()
    assert await postgres.active_sessions() == await sqlite.active_sessions()
    assert await postgres.session_memories("s1") == await sqlite.session_memories("s1")
    assert await postgres.stored_session("s1") == await sqlite.stored_session("s1")
    assert await postgres.stored_session("nobody") is None


async def test_the_same_records_give_the_same_export_on_both_engines(both: tuple[Store, Store]) -> None:
    for table in ("requests", "sessions"):
        for where, since in ((Filter(), None), (Filter(tag=("team", "pay")), NOW - 2000)):
            exported = []
            for store in both:
                with store.export_rows(table, since, NOW, where) as found:
                    exported.append((found.columns, list(found.rows)))
            assert exported[0][1], (table, where)
            assert exported[0] == exported[1], (table, where)


def columns_sqlite(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        return {
            n: [c[1] for c in conn.execute(f"PRAGMA table_info({n})")]
            for n in names
            if n != "sqlite_sequence"
        }
    finally:
        conn.close()


def columns_postgres(url: str) -> dict[str, list[str]]:
    rows = query(
        url,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name != 'vidurai_schema' ORDER BY table_name, ordinal_position",
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["table_name"], []).append(row["column_name"])
    return found


async def test_both_engines_have_the_same_migrations_tables_views_and_columns(
    tmp_path: Path, postgres_url: str
) -> None:
    names = [m.name for m in load_migrations(migrations_dir("sqlite"))]
    assert [m.name for m in load_migrations(migrations_dir("postgresql"))] == names
    for database in (str(tmp_path / "vidurai.db"), postgres_url):
        store = open_store(database)
        await store.start()
        await store.close()
    sqlite_columns = columns_sqlite(tmp_path / "vidurai.db")
    assert set(sqlite_columns) >= {
        "requests",
        "sessions",
        "memories",
        "snapshots",
        "audit",
        "savings_by_tag",
        "virtual_keys",
    }
    assert columns_postgres(postgres_url) == sqlite_columns


START_AND_STOP = """
import asyncio, sys
from proxy.storage import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.start()
    await store.close()

asyncio.run(main())
"""


def test_three_instances_started_at_once_on_an_empty_database_migrate_once(database: str) -> None:
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", START_AND_STOP, database],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [start.communicate(timeout=60)[0] for start in starts]
    assert [start.returncode for start in starts] == [0, 0, 0], outputs
    assert not any("Traceback" in output or "error" in output.lower() for output in outputs), outputs
    if database.startswith("postgresql://"):
        applied = query(database, "SELECT version FROM vidurai_schema ORDER BY version")
        assert [row["version"] for row in applied] == list(range(1, LATEST + 1))
    else:
        assert query(database, "PRAGMA user_version") == [{"user_version": LATEST}]
    # Each migration ran in exactly one of the three processes.
    assert sum(output.count("storage.migrated") for output in outputs) == LATEST, outputs


def test_a_failing_migration_leaves_no_trace(tmp_path: Path, postgres_url: str) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir("postgresql"), directory)
    (directory / f"{LATEST + 1:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate(conn, directory)
        assert migrate(conn) == LATEST  # the good ones were kept, each in its own transaction
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)


async def test_a_database_newer_than_the_code_is_refused(postgres_url: str) -> None:
    store = open_store(postgres_url)
    await store.start()
    await store.close()
    query(postgres_url, "SELECT 1")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO vidurai_schema VALUES (%s, 'future.sql', 0)", (LATEST + 1,))
    with pytest.raises(MigrationError, match="newer"):
        await open_store(postgres_url).start()


async def test_a_session_is_expired_once_whichever_instances_run_the_expiry(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(3)]
    for store in stores:
        await store.start()
    stores[0].upsert_session(SessionRecord("idle", "t1", NOW - 100, NOW - 100))
    stores[1].upsert_session(SessionRecord("live", "t1", NOW - 100, NOW - 1))
    for store in stores[:2]:
        assert await store.flush()
    results = await asyncio.gather(*(store.expire_idle(NOW - 10, NOW) for store in stores))
    assert sorted(results, key=len) == [[], [], [("idle", NOW - 100)]]
    assert [r["id"] for r in query(postgres_url, "SELECT id FROM sessions WHERE expired_at IS NOT NULL")] == [
        "idle"
    ]
    assert query(postgres_url, "SELECT session_id, event, detail FROM audit") == [
        {"session_id": "idle", "event": "expired", "detail": '{"idle_s": 100}'}
    ]
    for store in stores:
        await store.close()


def test_two_instances_writing_the_same_sessions_at_once_never_deadlock(postgres_url: str) -> None:
    """One batch upserts the sessions whose totals the other adds to, and the reverse: each must
    wait for the other, never deadlock (PostgreSQL notices after deadlock_timeout, 1 s, and fails
    one batch: rows held back a second or more on a fleet, tests/test_cluster_e2e.py)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn)
    ids = [f"s{n:03d}" for n in range(200)]
    odd, even = ids[1::2], ids[0::2]
    rounds = 10
    start = threading.Barrier(2)

    def instance(name: str, upserted: list[str], totalled: list[str]) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for n in range(rounds):
                records = [SessionRecord(s, "t1", NOW, NOW, messages=2) for s in upserted]
                records += [request(f"{name}-{n}-{s}", NOW, s) for s in totalled]
                start.wait(timeout=30)
                try:
                    with conn.transaction():
                        batches.write(conn, split(records))
                except BaseException:
                    start.abort()  # the other instance stops waiting for this one
                    raise

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = [pool.submit(instance, "a", odd, even), pool.submit(instance, "b", even, odd)]
        errors = [done.exception(timeout=60) for done in both]
    assert not any(isinstance(e, psycopg.errors.DeadlockDetected) for e in errors), errors
    assert errors == [None, None]
    totals = query(postgres_url, "SELECT MIN(requests) AS low, MAX(requests) AS high FROM sessions")
    assert totals == [{"low": rounds, "high": rounds}]


async def test_an_unreachable_server_keeps_rows_logs_once_and_writes_the_backlog(postgres_url: str) -> None:
    relay = Relay()
    await relay.start()
    url = postgres_url.replace(":5432/", f":{relay.port}/")
    store = open_store(url, flush_interval=30)
    await store.start()
    store.add_request(request("before", NOW, "s1"))
    assert await store.flush()
    await relay.cut()
    with capture_logs() as logs:
        store.add_request(request("during-1", NOW + 1, "s1"))
        assert await store.flush() is False
        store.add_request(request("during-2", NOW + 2, "s1"))
        assert await store.flush() is False  # the same incident: not logged again
    assert [e["event"] for e in logs] == ["storage.unwritable"]
    health = store.health()
    assert (health.writable, health.queued, health.dropped) == (False, 2, 0)
    await relay.start()  # the server is back
    with capture_logs() as logs:
        assert await store.flush() is True
    assert [e["event"] for e in logs] == ["storage.recovered"]
    assert store.health().writable and store.queued == 0
    await store.close()
    ids = [r["id"] for r in query(postgres_url, "SELECT id FROM requests ORDER BY id")]
    assert ids == ["before", "during-1", "during-2"]
    assert query(postgres_url, "SELECT requests FROM sessions") == [{"requests": 3}]
    await relay.cut()


async def test_a_proxy_starting_while_the_server_is_down_serves_and_migrates_when_it_is_back(
    postgres_url: str,
) -> None:
    relay = Relay()
    await relay.start()
    await relay.cut()  # nothing listens on the port
    url = postgres_url.replace(":5432/", f":{relay.port}/")
    with capture_logs() as logs:
        store = open_store(url, flush_interval=30)
        await store.start()  # does not raise: the proxy serves, rows wait
    assert [e["event"] for e in logs] == ["storage.unwritable"]
    store.add_request(request("queued", time.time(), None))
    assert store.health().writable is False and await store.flush() is False
    await relay.start()
    assert await store.flush() is True
    await store.close()
    assert query(postgres_url, "SELECT id FROM requests") == [{"id": "queued"}]
    await relay.cut()


async def test_a_row_the_server_refuses_is_logged_and_the_rest_of_its_batch_kept(postgres_url: str) -> None:
    store = open_store(postgres_url, flush_interval=30)
    await store.start()
    store.add_request(request("good-1", NOW, "s1"))
    store.add_request(request("bad\x00id", NOW, "s1"))  # PostgreSQL text cannot hold NUL
    store.add_request(request("good-2", NOW, "s1"))
    with capture_logs() as logs:
        assert await store.flush()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["storage.row_rejected"]
    await store.close()
    assert [r["id"] for r in query(postgres_url, "SELECT id FROM requests ORDER BY id")] == [
        "good-1",
        "good-2",
    ]
    assert query(postgres_url, "SELECT requests FROM sessions") == [{"requests": 2}]


async def test_the_proxy_keeps_serving_while_the_server_is_away_and_writes_the_backlog(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, postgres_url: str
) -> None:
    relay = Relay()
    await relay.start()
    url = await make_proxy(
        storage_database=postgres_url.replace(":5432/", f":{relay.port}/"), storage_flush_interval="0.05"
    )
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}

    async def ask(text: str) -> None:
        body = {"model": "claude-fake-1", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
        async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def health() -> dict[str, Any]:
        async with http.get(url + "/health") as response:
            result: dict[str, Any] = await response.json()
            return result

    await ask("before")
    await wait_rows(postgres_url, "SELECT id FROM requests")
    await relay.cut()
    await ask("during, a new conversation")  # its look-up fails: served as new, not refused
    await ask("during, another one")
    deadline = time.monotonic() + 5.0
    while (state := await health())["storage"]["writable"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # polled: the writer's next flush finds the server gone
    assert state["status"] == "degraded" and state["totals"] is None
    assert state["storage"]["writable"] is False and state["storage"]["queued"] >= 2
    await relay.start()
    await wait_rows(postgres_url, "SELECT id FROM requests", count=3)
    state = await health()
    assert state["status"] == "ok" and state["totals"]["requests"] == 3 and state["storage"]["dropped"] == 0
    await relay.cut()


async def test_connections_the_server_dropped_while_idle_are_replaced_without_an_incident(
    postgres_url: str,
) -> None:
    relay = Relay()
    await relay.start()
    store = open_store(postgres_url.replace(":5432/", f":{relay.port}/"), flush_interval=30)
    await store.start()
    store.add_request(request("first", NOW, "s1"))
    assert await store.flush()
    assert (await store.totals())["requests"] == 1  # a read connection is now kept idle
    await relay.cut()  # the server restarts between two batches: every open connection is gone
    await relay.start()
    with capture_logs() as logs:
        store.add_request(request("second", NOW + 1, "s1"))
        assert await store.flush()
        assert (await store.totals())["requests"] == 2
    assert [e["event"] for e in logs if e["log_level"] in ("error", "warning")] == []
    assert store.health().writable
    await store.close()
    await relay.cut()
