"""`python -m proxy export`: a known database in both formats, the filters, streaming, and bad arguments."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.export import NO_MATCH, main, parse_date
from proxy.storage import open_store
from proxy.storage.sqlite.migrations import migrate_path
from tests.databases import execute

ROOT = Path(__file__).resolve().parent.parent


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


REQUESTS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "created_at": ts("2026-11-25T23:59:59"),
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
        "input_tokens": 1200,
        "output_tokens": 80,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "tokens_original_est": 5000,
        "tokens_forwarded_est": 1250,
        "tokens_saved": 3750,
        "cost_usd": 0.0048,
        "cost_saved_usd": 0.01125,
    },
    {
        "id": "r2",
        "created_at": ts("2026-11-26T00:00:00"),
        "session_id": "s2",
        "tenant": "t1",
        "provider": "openai",
        "endpoint": "chat_completions",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": "my-local-model",
        "stream": 0,
        "status": 200,
        "input_tokens": 10,
        "output_tokens": 5,
    },
    {
        "id": "r3",
        "created_at": ts("2026-11-26T12:30:00.250"),
        "session_id": "s1",
        "tenant": "t1",
        "provider": "anthropic",
        "endpoint": "messages",
        "method": "POST",
        "path": "/v1/messages",
        "model": "claude-sonnet-4-5",
        "stream": 1,
        "status": 502,
        "error": 'upstream said "no", then closed — ünïcödé, commas\nand a newline',
    },
]
SESSIONS: list[dict[str, Any]] = [
    {
        "id": "s1",
        "tenant": "t1",
        "created_at": ts("2026-11-20T08:00:00"),
        "last_seen_at": ts("2026-11-26T12:30:00.250"),
        "requests": 2,
        "tokens_saved": 3750,
        "cost_usd": 0.0048,
    },
    {
        "id": "s2",
        "tenant": "t1",
        "created_at": ts("2026-11-26T00:00:00"),
        "last_seen_at": ts("2026-11-26T00:00:00"),
        "expired_at": ts("2026-11-26T01:00:00"),
        "requests": 1,
    },
]


def insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
    )


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A migrated database holding REQUESTS and SESSIONS, written like the proxy's (WAL mode)."""
    path = tmp_path / "vidurai.db"
    migrate_path(str(path))
    with sqlite3.connect(path) as conn:
        for row in REQUESTS:
            insert(conn, "requests", row)
        for row in SESSIONS:
            insert(conn, "sessions", row)
    conn.close()
    return path


def run(database: Path, tmp_path: Path, *args: str) -> str:
    """Export to a file in-process; returns the file's text."""
    out = tmp_path / "out"
    assert main(["--database", str(database), "--output", str(out), *args]) == 0
    return out.read_text(encoding="utf-8")


def cli(*args: str, module: str = "proxy.export", text: bool = True) -> subprocess.CompletedProcess[Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDURAI_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", *module.split(), *args],
        capture_output=True,
        text=text,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def test_csv_of_a_known_database(database: Path, tmp_path: Path) -> None:
    text = run(database, tmp_path, "--format", "csv")
    records = list(csv.DictReader(text.splitlines(keepends=True)))
    assert [r["id"] for r in records] == ["r1", "r2", "r3"]
    first = records[0]
    assert first["created_at"] == "2026-11-25T23:59:59.000Z"
    assert (first["model"], first["input_tokens"], first["tokens_saved"]) == (
        "claude-sonnet-4-5",
        "1200",
        "3750",
    )
    assert (first["cost_usd"], first["duration_ms"]) == ("0.0048", "812.5")
    assert records[1]["cost_usd"] == ""  # unpriced model: NULL, not 0
    assert records[2]["created_at"] == "2026-11-26T12:30:00.250Z"
    assert records[2]["error"] == REQUESTS[2]["error"]  # quotes, commas, newline and UTF-8 survive
    columns = [row[1] for row in sqlite3.connect(database).execute("PRAGMA table_info(requests)")]
    assert list(first) == columns  # every column of the table, in its order


def test_json_of_a_known_database(database: Path, tmp_path: Path) -> None:
    records = json.loads(run(database, tmp_path, "--format", "json"))
    assert [r["id"] for r in records] == ["r1", "r2", "r3"]
    first = records[0]
    assert first["input_tokens"] == 1200 and first["cost_usd"] == 0.0048 and first["stream"] == 1
    assert first["created_at"] == "2026-11-25T23:59:59.000Z"
    assert records[1]["cost_usd"] is None and records[1]["duration_ms"] is None
    assert records[2]["error"] == REQUESTS[2]["error"]


def test_json_is_one_object_per_line(database: Path, tmp_path: Path) -> None:
    lines = run(database, tmp_path, "--format", "json").splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 2 + len(REQUESTS)


def test_since_until_and_session_filters(database: Path, tmp_path: Path) -> None:
    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json.loads(run(database, tmp_path, "--format", "json", *args))]

    assert ids("--since", "2026-11-26") == ["r2", "r3"]
    assert ids("--since", "2026-11-26T12:30:00.250Z") == ["r3"]  # an exported created_at round-trips
    assert ids("--since", "2026-11-26T05:00:00+05:00") == ["r2", "r3"]  # offsets are honoured
    assert ids("--until", "2026-11-26") == ["r1"]
    assert ids("--session", "s1") == ["r1", "r3"]
    assert ids("--session", "s1", "--since", "2026-11-26") == ["r3"]
    out = tmp_path / "none.json"
    args = ["--database", str(database), "--output", str(out), "--format", "json", "--session", "nope"]
    assert main(args) == NO_MATCH  # a name that matches nothing is not a silent success
    assert out.read_text(encoding="utf-8") == "[]\n"  # yet the output is a valid, empty file


def test_sessions_table(database: Path, tmp_path: Path) -> None:
    records = json.loads(run(database, tmp_path, "--format", "json", "--sessions"))
    assert [r["id"] for r in records] == ["s2", "s1"]  # ordered by last_seen_at
    assert records[0]["expired_at"] == "2026-11-26T01:00:00.000Z"
    assert records[1]["expired_at"] is None and records[1]["tokens_saved"] == 3750
    since = run(database, tmp_path, "--format", "csv", "--sessions", "--since", "2026-11-26T06:00")
    assert [r["id"] for r in csv.DictReader(since.splitlines(keepends=True))] == ["s1"]


def test_export_leaves_the_database_untouched(database: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    run(database, tmp_path, "--format", "csv")
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before


def test_stdout_through_the_command_line(database: Path) -> None:
    result = cli("--format", "csv", "--database", str(database), "--since", "2026-11-26", text=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    lines = result.stdout.decode("utf-8").split("\r\n")  # RFC 4180 line ends, untranslated
    assert lines[0].startswith("id,created_at,session_id,")
    assert [line.split(",")[0] for line in lines[1:3]] == ["r2", "r3"]


def test_database_from_the_config_file(database: Path, tmp_path: Path) -> None:
    ini = tmp_path / "vidurai.ini"
    ini.write_text(f"[storage]\ndatabase = {database}\n", encoding="utf-8")
    result = cli("--format", "json", "--config", str(ini), "--session", "s2")
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == ["r2"]


def test_dispatched_by_python_m_proxy(database: Path) -> None:
    result = cli("export", "--format", "json", "--database", str(database), module="proxy")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(REQUESTS)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        ([], 2, "--format"),
        (["--format", "xml"], 2, "invalid choice"),
        (["--format", "csv", "--since", "yesterday"], 2, "not an ISO date"),
        (["--format", "csv", "--since", "2026-13-01"], 2, "not an ISO date"),
        (["--format", "csv", "--bogus"], 2, "unrecognized arguments"),
        (["--format", "csv", "--database", "missing.db"], 1, "database not found: missing.db"),
        (["--format", "csv", "--database", "setup.cfg"], 1, "cannot read setup.cfg"),
        (["--format", "csv", "--config", "missing.ini"], 1, "configuration file not found"),
        (
            ["--format", "csv", "--database", "{db}", "--output", "/nonexistent/dir/out.csv"],
            1,
            "/nonexistent/dir",
        ),
    ],
)
def test_bad_arguments_get_one_line_and_non_zero_exit(
    args: list[str], code: int, needle: str, database: Path
) -> None:
    result = cli(*[arg.replace("{db}", str(database)) for arg in args])
    assert result.returncode == code
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_not_a_proxy_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    result = cli("--format", "csv", "--database", str(other))
    assert result.returncode == 1 and "not a Vidurai Proxy database" in result.stderr


def test_a_failed_export_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert main(["--format", "csv", "--database", str(tmp_path / "missing.db"), "--output", str(out)]) == 1
    assert list(tmp_path.iterdir()) == []


def test_parse_date() -> None:
    assert parse_date("2026-11-26") == ts("2026-11-26T00:00:00")
    assert parse_date("2026-11-26T10:00:00Z") == ts("2026-11-26T10:00:00")
    assert parse_date(" 2026-11-26 10:00 ") == ts("2026-11-26T10:00:00")


def test_rows_are_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    migrate_path(str(path))
    rows = 4_000
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO requests (id, created_at, session_id, provider, endpoint, method, path, model,"
            " error) VALUES (?, ?, 's', 'anthropic', 'messages', 'POST', '/v1/messages', 'claude-x', ?)",
            ((f"req-{i:06d}", 1_800_000_000 + i, "x" * 2000) for i in range(rows)),
        )
    conn.close()
    for fmt in ("csv", "json"):
        out = tmp_path / f"big.{fmt}"
        tracemalloc.start()
        try:
            assert main(["--format", fmt, "--database", str(path), "--output", str(out)]) == 0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # All rows at once would hold 8 MB of error strings alone; streamed, the peak is about 0.2 MB.
        assert peak < 1_000_000, f"{fmt}: peak {peak} bytes"
        assert out.stat().st_size > rows * 2000


@pytest.fixture
def postgres_copy(postgres_url: str) -> str:
    """The same REQUESTS and SESSIONS in a PostgreSQL database (migrated by the proxy's own store)."""
    import asyncio

    store = open_store(postgres_url)
    asyncio.run(store.start())
    asyncio.run(store.close())
    for table, rows in (("requests", REQUESTS), ("sessions", SESSIONS)):
        for row in rows:
            execute(
                postgres_url,
                f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
    return postgres_url


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "csv"),
        ("--format", "json", "--since", "2026-11-26"),
        ("--format", "json", "--sessions"),
        ("--format", "csv", "--until", "2026-11-26T12:00"),
    ],
)
def test_a_postgresql_database_exports_what_the_same_sqlite_one_does(
    database: Path, postgres_copy: str, args: tuple[str, ...]
) -> None:
    from_sqlite = cli(*args, "--database", str(database))
    from_postgres = cli(*args, "--database", postgres_copy)
    assert from_sqlite.returncode == from_postgres.returncode == 0, from_postgres.stderr
    assert from_sqlite.stdout.count("\n") >= 2
    assert from_postgres.stdout == from_sqlite.stdout


def test_an_unreachable_postgresql_server_is_one_line(closed_port_url: str) -> None:
    url = closed_port_url.replace("http://", "postgresql://postgres@") + "/vidurai"
    result = cli("--format", "csv", "--database", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("vidurai-proxy export: error: cannot read postgresql://"), result.stderr
    assert "Traceback" not in result.stderr


def test_postgresql_rows_are_streamed_not_loaded(postgres_url: str, tmp_path: Path) -> None:
    import asyncio

    store = open_store(postgres_url)
    asyncio.run(store.start())
    asyncio.run(store.close())
    rows = 4_000
    execute(
        postgres_url,
        "INSERT INTO requests (id, created_at, session_id, provider, endpoint, method, path, model, error) "
        "SELECT 'req-' || lpad(i::text, 6, '0'), 1800000000 + i, 's', 'anthropic', 'messages', 'POST', "
        "'/v1/messages', 'claude-x', repeat('x', 2000) FROM generate_series(0, ?) AS i",
        (rows - 1,),
    )
    out = tmp_path / "big.json"
    tracemalloc.start()
    try:
        assert main(["--format", "json", "--database", postgres_url, "--output", str(out)]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes"  # all rows at once: 8 MB of error strings alone
    assert len(json.loads(out.read_text(encoding="utf-8"))) == rows
