"""`python -m proxy` as a process: kill -9 loses at most the last second, SIGTERM nothing (issue 3)."""

from __future__ import annotations

import asyncio
import os
import resource
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

    async def start(max_files: int | None = None, **settings: str) -> Spawned:
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
            **settings,
        )
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


async def test_at_the_file_descriptor_limit_one_line_then_service_resumes(spawn: Spawner) -> None:
    proxy = await spawn(max_files=256, VIDURAI_SERVER_KEEPALIVE_TIMEOUT="30")
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
    assert stderr.count("out of file descriptors") == 1, stderr[-2000:]
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
