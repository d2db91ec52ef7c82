"""Real servers for the scale-out tests: Redis (the machine's, under a key prefix of the test's own,
or a redis-server of the test's own to kill), proxy instances as processes, and nginx before them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.fake_upstream import FakeUpstream
from tests.process import ProxyProcess, proxy_env, running

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
    try:
        await server.start()
        yield server
    finally:
        await server.kill()


# --- proxy instances and nginx in front of them --------------------------------------------------

NGINX = "/usr/sbin/nginx"


def instance_env(fake: FakeUpstream, database: str, port: int, **settings: str) -> dict[str, str]:
    """`python -m proxy` configured only by VIDURAI_* variables, as a container would be; `settings`
    are more of them by lower-case name (cluster_redis_url="...")."""
    variables = {
        "server_port": str(port),
        "storage_database": database,
        "upstream_anthropic_base_url": fake.anthropic_base_url,
        "upstream_openai_base_url": fake.openai_base_url,
        "ui_terminal": "off",
        **settings,
    }
    return proxy_env(**{f"VIDURAI_{name.upper()}": value for name, value in variables.items()})


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def _wait_accepting(port: int, process: Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            output = _read(log_path)
            assert process.poll() is None, f"exited {process.returncode}:\n{output}"
            assert time.monotonic() < deadline, f"not listening on {port}:\n{output}"
            await asyncio.sleep(0.05)


def nginx_conf(folder: Path, port: int, upstream_ports: list[int]) -> str:
    """Round robin over the instances, nothing buffered, failures retried only where nginx may:
    `proxy_next_upstream error timeout` passes a request to the next instance when it could not be
    sent (connection refused: an instance is down), and never a POST that reached one (the default
    without `non_idempotent`), so no model call is sent twice."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
    user = "user root;" if os.geteuid() == 0 else ""  # workers write the temp folders below
    return f"""
{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {folder}/nginx-access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy_temp;
    fastcgi_temp_path {folder}/fastcgi_temp;
    uwsgi_temp_path {folder}/uwsgi_temp;
    scgi_temp_path {folder}/scgi_temp;
    client_max_body_size 64m;
    upstream vidurai {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://vidurai;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def _write_nginx_conf(folder: Path, upstream_ports: list[int]) -> tuple[int, Path]:
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is missing: install Debian's nginx (`.ci/system-packages` does)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_conf(folder, port, upstream_ports))
    return port, conf


@contextlib.asynccontextmanager
async def nginx(folder: Path, upstream_ports: list[int]) -> AsyncIterator[str]:
    """Debian's nginx in the foreground on a free port in front of `upstream_ports`; its URL."""
    port, conf = _write_nginx_conf(folder, upstream_ports)
    log_path = folder / "nginx-error.log"
    command = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(log_path), "-g", "daemon off;"]
    process = spawn(command, folder, folder / "nginx-output.log")
    try:
        await _wait_accepting(port, process, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


@attrs.define
class Fleet:
    """Proxy instances as processes on one database, each on a port of its own, and nginx."""

    folder: Path
    fake: FakeUpstream
    database: str
    settings: dict[str, str]
    ports: list[int]
    stack: contextlib.AsyncExitStack
    instances: list[ProxyProcess] = attrs.Factory(list)
    url: str = ""  # nginx's

    async def start(self, index: int) -> ProxyProcess:
        """Start instance `index` on its port (again, after a kill); waits for its `listening` line."""
        env = instance_env(self.fake, self.database, self.ports[index], **self.settings)
        command = [sys.executable, "-m", "proxy"]
        return await self.stack.enter_async_context(running(command, self.folder, env))

    async def restart(self, index: int) -> ProxyProcess:
        self.instances[index] = await self.start(index)
        return self.instances[index]


@contextlib.asynccontextmanager
async def fleet(
    folder: Path, fake: FakeUpstream, database: str, count: int = 3, **settings: str
) -> AsyncIterator[Fleet]:
    """`count` instances started together (their migrations race, as in a rolling deploy), nginx
    in front; everything stopped afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        ports = [free_port() for _ in range(count)]
        group = Fleet(folder, fake, database, settings, ports, stack)
        group.instances = list(await asyncio.gather(*(group.start(index) for index in range(count))))
        group.url = await stack.enter_async_context(nginx(folder / "nginx", ports))
        yield group


@attrs.define
class Load:
    """What a load run saw: answered requests by their unique model name (and when), failures."""

    answered: dict[str, float] = attrs.Factory(dict)
    failures: list[tuple[float, str]] = attrs.Factory(list)  # (when, what)

    def failed_after(self, moment: float) -> list[tuple[float, str]]:
        return [failure for failure in self.failures if failure[0] > moment]


async def load(url: str, seconds: float, clients: int = 16, messages: int = 1) -> Load:
    """`clients` connections sending small Messages calls back to back for `seconds` (bounded in
    time); each request names a model of its own, so its row can be found in the database.
    `messages` > 1: conversations that long (short texts: counted, never worth folding)."""
    result = Load()
    deadline = time.monotonic() + seconds
    headers = {"x-api-key": "sk-ant-load-0123456789", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def client(index: int) -> None:
            serial = 0
            while time.monotonic() < deadline:
                model = f"load-{index}-{serial}"
                serial += 1
                history = [
                    {"role": "assistant" if n % 2 else "user", "content": f"client {index} turn {n}"}
                    for n in range(messages - 1)
                ]
                history.append({"role": "user", "content": f"request {serial}"})
                body = {"model": model, "max_tokens": 16, "messages": history}
                try:
                    async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            result.answered[model] = time.monotonic()
                        else:
                            result.failures.append((time.monotonic(), f"{response.status}"))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.failures.append((time.monotonic(), type(exc).__name__))
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return result
