"""`python -m proxy` as a process: kill -9 loses at most the last second, SIGTERM nothing (issue 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO

import aiohttp
import attrs
import pytest

from tests.fake_upstream import FakeUpstream
from tests.test_metrics_e2e import query

KEY = "sk-ant-crash-test-SECRET-0123456789"
STARTUP_TIMEOUT = 20.0


@attrs.define
class Spawned:
    process: subprocess.Popen[bytes]
    url: str
    db: Path
    stderr: Path


Spawner = Callable[[], Awaitable[Spawned]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def exited(process: subprocess.Popen[bytes], within: float) -> Awaitable[int]:
    return asyncio.to_thread(process.wait, within)


def launch(cwd: Path, env: dict[str, str], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """`python -m proxy` exactly as a user runs it (Popen returns at once; nothing here blocks)."""
    return subprocess.Popen(
        [sys.executable, "-m", "proxy"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


@pytest.fixture
async def spawn(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Spawner]:
    """Start `python -m proxy` in tmp_path, configured only through VIDURAI_* variables; wait for /health."""
    processes: list[subprocess.Popen[bytes]] = []
    handles: list[IO[bytes]] = []

    async def start() -> Spawned:
        ini = tmp_path / "empty.ini"
        ini.write_text("")
        db, stderr = tmp_path / "vidurai.db", tmp_path / f"stderr-{len(processes)}.log"
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
        handle = stderr.open("wb")
        handles.append(handle)
        process = launch(tmp_path, env, handle)
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
    proxy.process.send_signal(signal.SIGTERM)  # at once: nothing has had time to be flushed by the timer
    assert await exited(proxy.process, 15) == 0, proxy.stderr.read_text()
    assert rows_by_model(proxy.db) == {"claude-fake-1": 15, "claude-fake-2": 5}
    sessions = query(proxy.db, "SELECT id, requests FROM sessions")
    assert sum(s["requests"] for s in sessions) == 20
    # The clean stop snapshots every active session.
    snapshotted = {row["session_id"] for row in query(proxy.db, "SELECT session_id FROM snapshots")}
    assert snapshotted == {s["id"] for s in sessions}
    stderr = proxy.stderr.read_bytes()
    assert b"Traceback" not in stderr and KEY.encode() not in stderr
    assert b"stopped" in stderr
