"""The proxy as a real process (its console script, `python -m proxy`, the container's command)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

STARTUP_TIMEOUT = 60.0  # the first start loads the sentence-vector table and tokenizer


@attrs.define
class ProxyProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    listening: dict[str, Any]  # the startup line, parsed

    @property
    def url(self) -> str:
        return str(self.listening["url"])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 30)


def proxy_env(**variables: str) -> dict[str, str]:
    """This process's environment without any VIDURAI_* variable, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VIDURAI_")}
    env.update(variables)
    return env


def _listening_line(text: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "listening":
                return event
    return None


async def run_to_exit(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A command that is expected to end by itself (a startup error, `export`)."""
    return await asyncio.to_thread(
        subprocess.run, command, cwd=cwd, env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT
    )


def _launch(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Popen returns at once; stdout and stderr go to a file, so a full pipe never stalls the proxy."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


@contextlib.asynccontextmanager
async def running(command: list[str], cwd: Path, env: dict[str, str]) -> AsyncIterator[ProxyProcess]:
    """Start `command` (logging JSON lines to stderr), wait for its "listening" line; killed on exit."""
    log_path = cwd / f"proxy-{time.monotonic_ns()}.log"
    process = _launch(command, cwd, env, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (listening := _listening_line(log_path.read_text(errors="replace"))) is None:
            output = log_path.read_text(errors="replace")
            assert process.poll() is None, f"{command} exited {process.returncode}:\n{output}"
            assert time.monotonic() < deadline, f"{command} did not start:\n{output}"
            await asyncio.sleep(0.05)
        yield ProxyProcess(process, log_path, listening)
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 30)
