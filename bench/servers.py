"""The benchmark's servers, each in its own process: the fake upstream, the bare pass-through and
`python -m proxy` exactly as `make run` starts it (its own config, logging at info to a file)."""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path

import attrs
import uvloop
from aiohttp import web

STARTUP_TIMEOUT = 60.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, all its threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _build(kind: str, upstream: str) -> web.Application:
    if kind == "upstream":
        from tests.fake_upstream import FakeUpstream

        return FakeUpstream(record=False).app()
    from .bare_passthrough import create_app

    return create_app(upstream)


async def _serve_async(kind: str, conn: Connection, upstream: str) -> None:
    if kind == "relay":
        from urllib.parse import urlsplit

        from .tcp_relay import serve

        target = urlsplit(upstream)
        assert target.hostname is not None and target.port is not None
        server = await serve(target.hostname, target.port)
        conn.send(("ready", server.sockets[0].getsockname()[1]))
        try:
            await asyncio.get_running_loop().run_in_executor(None, _wait_stop, conn)
        finally:
            server.close()
        return
    # wrk closes its connections at the end of each run, some mid-request: not worth a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    runner = web.AppRunner(_build(kind, upstream), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    conn.send(("ready", runner.addresses[0][1]))
    try:
        # A thread waits for "stop"; EOF (the benchmark died) stops the server too.
        await asyncio.get_running_loop().run_in_executor(None, _wait_stop, conn)
    finally:
        await runner.cleanup()


def _wait_stop(conn: Connection) -> None:
    try:
        conn.recv()
    except EOFError:
        pass


# The event loop each server runs on. The fake upstream keeps asyncio's own (it is the same for
# every path measured); the bare pass-through runs on uvloop, as `python -m proxy` does, so that
# the comparison is between the two programs and not their loops; "bare-asyncio" is the same
# pass-through on asyncio's loop, and "relay" the byte relay of bench/tcp_relay.py (bench/floor.py).
UVLOOP_KINDS = frozenset({"bare", "relay"})


def _serve(kind: str, conn: Connection, upstream: str) -> None:
    try:
        run = uvloop.run if kind in UVLOOP_KINDS else asyncio.run
        run(_serve_async(kind, conn, upstream))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


@attrs.define
class Server:
    """The fake upstream, the bare pass-through or the byte relay, in a spawned interpreter."""

    name: str
    url: str
    process: multiprocessing.process.BaseProcess
    conn: Connection

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @classmethod
    def start(cls, kind: str, upstream: str = "") -> Server:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no loop or sockets inherited
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(kind, child, upstream), name=f"bench-{kind}", daemon=True)
        process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not parent.poll(0.1):
            if (not process.is_alive() or time.monotonic() > deadline) and not parent.poll():
                process.kill()
                raise RuntimeError(f"{kind} server exited or did not start within {STARTUP_TIMEOUT:g} s")
        status, value = parent.recv()
        if status != "ready":
            process.join(5)
            raise RuntimeError(f"{kind} server failed to start:\n{value}")
        print(f"  {kind}: http://127.0.0.1:{value} (pid {process.pid})", file=sys.stderr)
        return cls(kind, f"http://127.0.0.1:{value}", process, parent)

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class Proxy:
    """`python -m proxy` with settings from VIDURAI_* variables, as an operator runs it."""

    url: str
    process: subprocess.Popen[bytes]
    database: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls, upstream: str, workdir: Path, ini: str = "", python: str = sys.executable, **settings: str
    ) -> Proxy:
        """`python`: another interpreter, e.g. an older checkout's venv (bench/paired.py)."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "empty.ini").write_text(ini)  # e.g. a [pricing] section
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDURAI_")}
        env.update(
            VIDURAI_CONFIG=str(workdir / "empty.ini"),
            VIDURAI_SERVER_PORT=str(port),
            VIDURAI_STORAGE_DATABASE=str(workdir / "vidurai.db"),
            VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL=f"{upstream}/anthropic",
            VIDURAI_UPSTREAM_OPENAI_BASE_URL=f"{upstream}/openai/v1",
            VIDURAI_UI_TERMINAL="off",
        )
        env.update({f"VIDURAI_{key.upper()}": value for key, value in settings.items()})
        log = workdir / "proxy.log"
        with log.open("wb") as handle:  # the default level (info): one JSON line per request
            process = subprocess.Popen(
                [python, "-m", "proxy"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=handle,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the proxy exited at startup:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the proxy did not start within {STARTUP_TIMEOUT:g} s")
            time.sleep(0.1)
        print(f"  proxy: {url} (pid {process.pid})", file=sys.stderr)
        return cls(url, process, workdir / "vidurai.db", log)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
