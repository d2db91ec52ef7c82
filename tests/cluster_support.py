"""Real servers for the scale-out tests: a Redis of the test's own, and the machine's shared Redis
under a key prefix of the test's own (deleted afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

# The machine's Redis, started before any work begins (and in CI); shared by everyone, so a test
# only touches keys under its own prefix.
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 10.0
Popen = subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def shared_redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the machine's Redis; its keys are deleted afterwards."""
    prefix = f"vidurai-test-{os.urandom(6).hex()}:"
    client = Redis.from_url(SHARED_REDIS_URL)
    try:
        await client.ping()
    except RedisError as exc:
        pytest.fail(f"Redis is not answering at {SHARED_REDIS_URL} ({exc}); start it (.ci/run does)")
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def spawn(command: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None) -> Popen:
    """Start a server in the background, its output appended to `log_path` (never a pipe that fills)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


@attrs.define
class OwnRedis:
    """A redis-server of the test's own (never the shared one), to stop and start at will."""

    folder: Path
    port: int = attrs.field(factory=free_port)
    process: Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: install Debian's redis-server (.ci/run does)")
        # No persistence: a restart comes back empty, the harder case for the proxy.
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.process = spawn([*command, "no"], self.folder, self.folder / f"redis-{self.port}.log")
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while True:
                try:
                    await client.ping()
                    return
                except RedisError:
                    assert self.process.poll() is None, f"redis-server exited {self.process.returncode}"
                    assert time.monotonic() < deadline, "redis-server did not start"
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 10)
        self.process = None


@contextlib.asynccontextmanager
async def own_redis(folder: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(folder)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
