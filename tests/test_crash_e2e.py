"""`python -m proxy` as a process: kill -9 loses at most the last second, SIGTERM nothing, idle or
under load (issues 3, 11); an unwritable database degrades /health and loses no row it can keep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import attrs
import pytest

from tests.databases import query
from tests.fake_upstream import FakeUpstream

KEY = "sk-ant-crash-test-SECRET-0123456789"
STARTUP_TIMEOUT = 20.0
LONG = 11  # messages: past [compression] threshold_messages (10)


@attrs.define
class Spawned:
    process: subprocess.Popen[bytes]
    url: str
    db: Path
    stderr: Path


Spawner = Callable[..., Awaitable[Spawned]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def exited(process: subprocess.Popen[bytes], within: float) -> Awaitable[int]:
    return asyncio.to_thread(process.wait, within)


def launch(
    cwd: Path, env: dict[str, str], stderr: IO[bytes], max_files: int | None = None
) -> subprocess.Popen[bytes]:
    """`python -m proxy` exactly as a user runs it (Popen returns at once; nothing here blocks);
    `max_files` lowers its file-descriptor limit, as `ulimit -n` would."""

    def limit_files() -> None:
        if max_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    return subprocess.Popen(
        [sys.executable, "-m", "proxy"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=limit_files,
    )


@pytest.fixture
async def spawn(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Spawner]:
    """Start `python -m proxy` in tmp_path, configured only through VIDURAI_* variables; wait for /health."""
    processes: list[subprocess.Popen[bytes]] = []
    handles: list[IO[bytes]] = []

    async def start(db: Path | None = None, max_files: int | None = None, **settings: str) -> Spawned:
        """`settings`: extra VIDURAI_* variables by lower-case name, e.g. storage_shutdown_timeout;
        `max_files`: the process's file-descriptor limit."""
        ini = tmp_path / "empty.ini"
        ini.write_text("")
        db = db or tmp_path / "vidurai.db"
        stderr = tmp_path / f"stderr-{len(processes)}.log"
        port = free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("VIDURAI_")}
        env.update(
            VIDURAI_CONFIG=str(ini),
            VIDURAI_SERVER_PORT=str(port),
            VIDURAI_STORAGE_DATABASE=str(db),
            VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL=fake_upstream.anthropic_base_url,
            VIDURAI_UPSTREAM_OPENAI_BASE_URL=fake_upstream.openai_base_url,
            VIDURAI_UI_TERMINAL="off",
        )
        env.update({f"VIDURAI_{name.upper()}": value for name, value in settings.items()})
        handle = stderr.open("wb")
        handles.append(handle)
        process = launch(tmp_path, env, handle, max_files)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while True:
                assert process.poll() is None, stderr.read_text()
                try:
                    async with http.get(url + "/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "proxy did not start: " + stderr.read_text()
                await asyncio.sleep(0.05)
        return Spawned(process, url, db, stderr)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        await exited(process, 10)
    for handle in handles:
        handle.close()


async def send(url: str, model: str, count: int, conversation: str) -> None:
    """`count` sequential Messages calls, each answered before the next is sent."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            body = {
                "model": model,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"{conversation} turn {n}"}],
            }
            async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
                assert response.status == 200
                await response.read()


async def send_long(url: str, model: str, conversation: str) -> None:
    """One Messages call with LONG messages: enough to fold, so its session holds a memory."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"{conversation} turn {n}"}
        for n in range(LONG)
    ]
    async with aiohttp.ClientSession() as http:
        body = {"model": model, "max_tokens": 16, "messages": messages}
        async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
            assert response.status == 200
            await response.read()


def rows_by_model(db: Path) -> dict[str, int]:
    rows = query(db, "SELECT model, COUNT(*) AS n FROM requests GROUP BY model")
    return {row["model"]: row["n"] for row in rows}


async def test_kill_9_loses_at_most_the_last_second(spawn: Spawner) -> None:
    proxy = await spawn()
    await send(proxy.url, "claude-fake-1", 20, "early")
    await asyncio.sleep(1.5)  # more than the 1 s the issue allows to be lost
    await send(proxy.url, "claude-fake-2", 10, "late")
    proxy.process.send_signal(signal.SIGKILL)
    assert await exited(proxy.process, 10) == -signal.SIGKILL
    counts = rows_by_model(proxy.db)
    assert counts.get("claude-fake-1") == 20, counts
    assert counts.get("claude-fake-2", 0) <= 10
    assert query(proxy.db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    # Rows and their sessions' running totals commit together: a crash never leaves them disagreeing.
    sessions = query(proxy.db, "SELECT COALESCE(SUM(requests), 0) AS n FROM sessions")[0]["n"]
    assert sessions == sum(counts.values())


async def test_sigterm_flushes_everything_and_exits_0(spawn: Spawner) -> None:
    proxy = await spawn()
    await send(proxy.url, "claude-fake-1", 15, "first conversation")
    await send(proxy.url, "claude-fake-2", 5, "second conversation")
    await send_long(proxy.url, "claude-fake-1", "third conversation")
    proxy.process.send_signal(signal.SIGTERM)  # at once: nothing has had time to be flushed by the timer
    assert await exited(proxy.process, 15) == 0, proxy.stderr.read_text()
    assert rows_by_model(proxy.db) == {"claude-fake-1": 16, "claude-fake-2": 5}
    sessions = query(proxy.db, "SELECT id, requests, messages FROM sessions")
    assert sum(s["requests"] for s in sessions) == 21
    # The clean stop snapshots every session holding a memory: the one long enough to fold.
    snapshotted = {row["session_id"] for row in query(proxy.db, "SELECT session_id FROM snapshots")}
    assert snapshotted == {s["id"] for s in sessions if s["messages"] >= LONG}
    stderr = proxy.stderr.read_bytes()
    assert b"Traceback" not in stderr and KEY.encode() not in stderr
    assert b"stopped" in stderr


# --- under load ---------------------------------------------------------------------------------

LOAD_WORKERS = 16


@attrs.define
class Load:
    """Requests answered with 200, by the unique model name each carried, and when."""

    answered: dict[str, float] = attrs.Factory(dict)
    failed: int = 0


async def load(url: str, seconds: float, result: Load) -> None:
    """LOAD_WORKERS clients sending back to back for `seconds` (bounded), each its own conversation.

    A worker stops at the first connection error: the proxy is gone or stopping.
    """
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def worker(index: int) -> None:
            serial = 0
            while time.monotonic() < deadline:
                model = f"load-{index}-{serial}"
                serial += 1
                body = {
                    "model": model,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"load worker {index}"}],
                }
                try:
                    async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
                        await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    result.failed += 1
                    return
                if response.status == 200:
                    result.answered[model] = time.monotonic()
                else:
                    result.failed += 1

        await asyncio.gather(*(worker(i) for i in range(LOAD_WORKERS)))


def stored_models(db: Path) -> set[str]:
    return {row["model"] for row in query(db, "SELECT model FROM requests")}


async def test_kill_9_under_sustained_load_keeps_every_row_answered_a_second_before(spawn: Spawner) -> None:
    proxy = await spawn()
    traffic = Load()
    sending = asyncio.create_task(load(proxy.url, 8.0, traffic))
    await asyncio.sleep(4.0)
    proxy.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await exited(proxy.process, 10) == -signal.SIGKILL
    await sending
    old = {model for model, at in traffic.answered.items() if at < killed_at - 1.0}
    assert len(old) > 100, f"only {len(old)} requests answered: not a load"
    stored = stored_models(proxy.db)
    assert old - stored == set(), (
        f"{len(old - stored)} of {len(old)} rows answered > 1 s before the kill lost"
    )
    assert query(proxy.db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    sessions = query(proxy.db, "SELECT COALESCE(SUM(requests), 0) AS n FROM sessions")[0]["n"]
    assert sessions == len(stored)


async def test_sigterm_under_load_keeps_every_answered_row(spawn: Spawner) -> None:
    proxy = await spawn()
    traffic = Load()
    sending = asyncio.create_task(load(proxy.url, 8.0, traffic))
    await asyncio.sleep(3.0)
    proxy.process.send_signal(signal.SIGTERM)
    assert await exited(proxy.process, 30) == 0, proxy.stderr.read_text()
    await sending
    assert len(traffic.answered) > 100
    assert set(traffic.answered) - stored_models(proxy.db) == set()
    stderr = proxy.stderr.read_bytes()
    assert b"Traceback" not in stderr and b"storage.unwritten_on_close" not in stderr


# --- an unwritable database ----------------------------------------------------------------------


async def send_one(http: aiohttp.ClientSession, url: str, model: str) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "one conversation"}]}
    async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
        assert response.status == 200  # serving never waits for the database
        await response.read()


async def wait_health(
    http: aiohttp.ClientSession, url: str, done: Callable[[dict[str, Any]], bool], within: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        async with http.get(url + "/health") as response:
            health: dict[str, Any] = await response.json()
        if done(health):
            return health
        assert time.monotonic() < deadline, f"/health never reached the expected state: {health}"
        await asyncio.sleep(0.1)


def events(stderr: Path) -> list[dict[str, Any]]:
    """The proxy's JSON log lines (lines that are not JSON, if any, are skipped)."""
    found = []
    for line in stderr.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def named(stderr: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in events(stderr) if e.get("event") == event]


def degraded(health: dict[str, Any]) -> bool:
    """Degraded because the writer failed (not only because /health could not read the totals)."""
    return bool(health["status"] == "degraded" and not health["storage"]["writable"])


def written(count: int) -> Callable[[dict[str, Any]], bool]:
    def check(health: dict[str, Any]) -> bool:
        storage = health["storage"]
        return bool(health["status"] == "ok" and storage["queued"] == 0 and storage["written"] >= count)

    return check


async def test_a_locked_database_degrades_health_and_the_backlog_is_written_after(spawn: Spawner) -> None:
    proxy = await spawn(storage_shutdown_timeout="1")
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            await send_one(http, proxy.url, f"before-{n}")
        await wait_health(http, proxy.url, written(5))
        blocker = sqlite3.connect(proxy.db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            for n in range(30):
                await send_one(http, proxy.url, f"locked-{n}")
            health = await wait_health(http, proxy.url, degraded)
            assert health["storage"]["queued"] >= 30 and health["storage"]["dropped"] == 0
            assert "locked" in health["storage"]["last_error"]
            async with http.get(proxy.url + "/metrics") as response:
                metrics = await response.text()
            assert "vidurai_storage_writable 0.0" in metrics
            assert re.search(r"^vidurai_storage_queued_rows (3\d|[4-9]\d)", metrics, re.M), metrics
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await wait_health(http, proxy.url, written(35))
        assert len(named(proxy.stderr, "storage.unwritable")) == 1  # once, not per row or retry
        assert len(named(proxy.stderr, "storage.recovered")) == 1

        # Locked again, then stopped: the stop waits shutdown_timeout and counts what it leaves.
        blocker = sqlite3.connect(proxy.db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for n in range(10):
                await send_one(http, proxy.url, f"at-stop-{n}")
            proxy.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert await exited(proxy.process, 20) == 0
            assert time.monotonic() - started < 10
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    (unwritten,) = named(proxy.stderr, "storage.unwritten_on_close")
    # The ten requests (their one-message conversation holds no memory: no snapshot at stop).
    assert unwritten["rows"] == 10 and unwritten["level"] == "error"
    models = stored_models(proxy.db)
    assert len(models) == 35 and not any(m.startswith("at-stop") for m in models)


async def test_a_deleted_database_directory_degrades_health_until_it_is_back(
    spawn: Spawner, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proxy = await spawn(db=data / "vidurai.db")
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            await send_one(http, proxy.url, f"before-{n}")
        await wait_health(http, proxy.url, written(5))
        shutil.rmtree(data)
        for n in range(10):
            await send_one(http, proxy.url, f"gone-{n}")
        health = await wait_health(http, proxy.url, degraded)
        assert "deleted" in health["storage"]["last_error"]
        data.mkdir()  # the directory is back: a new database is created and the backlog written
        await wait_health(http, proxy.url, written(15))
    assert stored_models(proxy.db) == {f"gone-{n}" for n in range(10)}
    assert len(named(proxy.stderr, "storage.unwritable")) == 1
    proxy.process.send_signal(signal.SIGTERM)
    assert await exited(proxy.process, 20) == 0


async def test_a_full_disk_degrades_health_and_the_rows_are_written_when_space_returns(
    spawn: Spawner,
) -> None:
    proxy = await spawn()
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            await send_one(http, proxy.url, f"before-{n}")
        await wait_health(http, proxy.url, written(5))
        # The proxy may write no byte past the start of any file: every write of the database (and
        # of its log) fails as on a full disk. Python ignores SIGXFSZ, so writes fail with EFBIG.
        soft, hard = resource.prlimit(proxy.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(proxy.process.pid, resource.RLIMIT_FSIZE, (1, hard))  # soft only: no privilege
        try:
            for n in range(20):
                await send_one(http, proxy.url, f"full-{n}")
            health = await wait_health(http, proxy.url, degraded)
            assert health["storage"]["queued"] >= 20
        finally:
            resource.prlimit(proxy.process.pid, resource.RLIMIT_FSIZE, (soft, hard))
        await wait_health(http, proxy.url, written(25))
    assert {f"full-{n}" for n in range(20)} <= stored_models(proxy.db)
    assert named(proxy.stderr, "storage.recovered")
    proxy.process.send_signal(signal.SIGTERM)
    assert await exited(proxy.process, 20) == 0


async def test_at_the_file_descriptor_limit_one_line_then_service_resumes(spawn: Spawner) -> None:
    proxy = await spawn(max_files=256, server_keepalive_timeout="30")
    host, port = "127.0.0.1", int(proxy.url.rsplit(":", 1)[1])

    async def connect() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            return writer
        except (OSError, TimeoutError):
            return None  # the listen backlog is full too

    # Idle connections past the proxy's limit: it runs out of descriptors to accept with.
    idle = [w for w in await asyncio.gather(*(connect() for _ in range(400))) if w is not None]
    await asyncio.sleep(2.5)  # asyncio retries accept() every second, up to 128 times a go
    stderr = proxy.stderr.read_text()
    # `python -m proxy` runs uvloop, whose libuv accepts and closes what it has no descriptor for,
    # silently; asyncio's own loop (an embedding of start_server) gets one line per incident.
    assert stderr.count("out of file descriptors") <= 1, stderr[-2000:]
    assert "Traceback" not in stderr and "socket.accept() out of system resource" not in stderr
    for writer in idle:
        writer.close()
    deadline = time.monotonic() + 15.0
    async with aiohttp.ClientSession() as http:
        while True:  # the freed descriptors serve new connections again
            try:
                async with http.get(proxy.url + "/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "the proxy did not recover"
            await asyncio.sleep(0.2)
    await send(proxy.url, "claude-fake-1", 3, "after the incident")
    assert "Traceback" not in proxy.stderr.read_text()
