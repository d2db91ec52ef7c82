"""End to end: `make run` in a tmux pane shows the live dashboard, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console
from rich.text import Text

from proxy.storage import open_store
from tests.conftest import anthropic_client, openai_client
from tests.fake_upstream import FakeUpstream

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
WIDTH, HEIGHT = 120, 40
# `make run` may first install the package into .venv (when setup.cfg changed): allow for it.
STARTUP_S = 180.0


def logged_events(log_file: Path) -> list[str]:
    """The `event` of every JSON line of the proxy's log file."""
    return [json.loads(line)["event"] for line in log_file.read_text(encoding="utf-8").splitlines()]


class Tmux:
    """A private tmux server (its own socket and config), so a user's tmux is never touched."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.config = tmp_path / "tmux.conf"
        # remain-on-exit: the pane stays after `make run` ends, to read how it ended.
        # status off: the whole window is the pane.
        self.config.write_text("set -g remain-on-exit on\nset -g status off\nset -g history-limit 5000\n")

    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> str:
        process = await asyncio.create_subprocess_exec(
            "tmux",
            "-S",
            self.socket,
            "-f",
            str(self.config),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, f"tmux {' '.join(args)}: {err.decode(errors='replace')}"
        return out.decode(errors="replace")

    async def capture(self, ansi: bool = False) -> str:
        return await self("capture-pane", "-p", *(["-e"] if ansi else []), "-t", "proxy")

    async def pane_dead(self) -> bool:
        return (await self("display-message", "-p", "-t", "proxy", "#{pane_dead}")).strip() == "1"

    async def stop(self) -> None:
        """Leave nothing behind whatever happened: TERM (then KILL) `make run` and the proxy, then tmux."""
        # Killing the tmux server alone is not enough: `make` and the proxy outlive their pane.
        with contextlib.suppress(AssertionError, ValueError, ProcessLookupError):
            pid = int((await self("display-message", "-p", "-t", "proxy", "#{pane_pid}")).strip())
            for signum in (signal.SIGTERM, signal.SIGKILL):
                if await self.pane_dead():
                    break
                os.killpg(pid, signum)  # exec'd by tmux, make leads the group the proxy runs in
                for _ in range(40):
                    if await self.pane_dead():
                        break
                    await asyncio.sleep(0.25)
        await self("kill-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def save_artifacts(plain: str, ansi: str) -> None:
    """The pane as text, and as an SVG picture of the terminal (rich re-renders the ANSI capture)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "terminal-capture.txt").write_text(plain, encoding="utf-8")
    console = Console(
        record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(Text.from_ansi(ansi.rstrip("\n")), end="", crop=True, overflow="crop")
    console.save_svg(str(ARTIFACTS / "terminal.svg"), title="make run")


async def wait_until(what: str, check: object, within_s: float, tmux: Tmux) -> None:
    """Poll `check` (sync or async) until it is true; fail showing the pane after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        result = check() if callable(check) else None
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; the pane shows:\n{await tmux.capture()}")
        await asyncio.sleep(0.25)


async def test_make_run_under_tmux(
    fake_upstream: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    if shutil.which("tmux") is None or shutil.which("make") is None:
        pytest.fail("tmux and make are needed for this test: apt-get install -y tmux make")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database, log_file = tmp_path / "vidurai.db", tmp_path / "proxy.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIDURAI_")}
    env.update(
        {
            "VIDURAI_SERVER_HOST": "127.0.0.1",
            "VIDURAI_SERVER_PORT": str(port),
            "VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL": fake_upstream.anthropic_base_url,
            "VIDURAI_UPSTREAM_OPENAI_BASE_URL": fake_upstream.openai_base_url,
            "VIDURAI_STORAGE_DATABASE": str(database),
            "VIDURAI_LOGGING_FILE": str(log_file),
            "VIDURAI_UI_TERMINAL": "auto",
        }
    )
    tmux = Tmux(tmp_path)
    # exec: make itself is the pane's process, so the pane ends when make (and the proxy) end.
    await tmux(
        "new-session",
        "-d",
        "-s",
        "proxy",
        "-x",
        str(WIDTH),
        "-y",
        str(HEIGHT),
        "-c",
        str(REPO),
        "exec make run",
        env=env,
    )
    try:

        async def healthy() -> bool:
            if await tmux.pane_dead():
                pytest.fail(f"`make run` ended before serving; the pane shows:\n{await tmux.capture()}")
            try:
                async with http.get(f"{base}/health") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until("the proxy to answer /health", healthy, STARTUP_S, tmux)

        async with anthropic_client(base) as claude, openai_client(base + "/v1") as gpt:
            await claude.messages.create(
                model="claude-sonnet-5",
                max_tokens=32,
                messages=[{"role": "user", "content": "Hello from tmux"}],
            )
            await claude.messages.create(
                model="claude-haiku-4-5",
                max_tokens=32,
                messages=[{"role": "user", "content": "Second question"}],
            )
            await gpt.chat.completions.create(
                model="gpt-5.4-mini", messages=[{"role": "user", "content": "And OpenAI"}]
            )
            with pytest.raises(Exception, match="429"):
                await gpt.chat.completions.create(
                    model="fake-429", messages=[{"role": "user", "content": "x"}]
                )

        async def committed() -> bool:
            async with http.get(f"{base}/metrics.json") as response:
                return bool((await response.json())["totals"]["requests"] == 4)

        await wait_until("four requests in /metrics.json", committed, 10, tmux)
        async with http.get(f"{base}/metrics.json") as response:
            totals = (await response.json())["totals"]

        expected = [
            r"Requests\s+4\b",
            r"Errors\s+1\b",
            rf"Tokens in\s+{totals['input_tokens']:,}\b",
            rf"Tokens out\s+{totals['output_tokens']:,}\b",
            "claude-sonnet-5",
            "claude-haiku-4-5",
            "gpt-5.4-mini",
            r"429 fake-429",
            f"{base}/dashboard",
        ]

        async def dashboard_shows_traffic() -> bool:
            screen = await tmux.capture()
            return all(re.search(pattern, screen) for pattern in expected)

        await wait_until(f"the dashboard to show {expected}", dashboard_shows_traffic, 10, tmux)
        screen, ansi = await tmux.capture(), await tmux.capture(ansi=True)
        save_artifacts(screen, ansi)
        assert len(screen.splitlines()) == HEIGHT
        # Logs went to the file, not over the dashboard.
        assert "request_id" not in screen and "listening" not in screen
        assert "listening" in logged_events(log_file)

        # A smaller terminal gets the narrow layout on the next redraw, still whole.
        await tmux("resize-window", "-t", "proxy", "-x", "80", "-y", "24")

        async def redrawn_small() -> bool:
            screen = await tmux.capture()
            lines = screen.splitlines()
            # Every panel fits: the last line is the bottom border of the latest requests.
            return (
                len(lines) == 24
                and lines[-1].startswith("╰")
                and "Latest requests" in screen
                and re.search(r"Requests\s+4\b", screen) is not None
            )

        await wait_until("the dashboard to fit 80x24", redrawn_small, 10, tmux)
        (ARTIFACTS / "terminal-80x24.txt").write_text(await tmux.capture(), encoding="utf-8")

        await tmux("send-keys", "-t", "proxy", "C-c")
        await wait_until("`make run` to end after Ctrl-C", tmux.pane_dead, 30, tmux)
        after = await tmux.capture()
        (ARTIFACTS / "terminal-after-ctrl-c.txt").write_text(after, encoding="utf-8")
        assert "Traceback" not in after
        assert "Vidurai Proxy: 4 requests" in after  # the summary left on the terminal
        assert "stopped" in logged_events(log_file)
        with pytest.raises(OSError):  # nothing listens any more
            await asyncio.open_connection("127.0.0.1", port)
        # Everything was flushed to SQLite on the way out.
        assert (await open_store(str(database)).totals())["requests"] == 4
    finally:
        await tmux.stop()
