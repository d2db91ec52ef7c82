"""Test support: the few calls tests make to a running proxy, the conversations they send, and what
they read back (the audit trail, the JSON log)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from proxy.config import LoggingConfig
from proxy.logs import configure_logging
from tests.conftest import ANTHROPIC_KEY
from tests.databases import query

ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}

# Short, so a row is in SQLite a moment after its response; polling then stays quick.
FLUSH_INTERVAL = "0.05"
CLAUDE = "claude-haiku-4-5-20251001"  # priced by the built-in prefix "claude-haiku-4-5"
CLAUDE_PRICE = "claude-haiku-4-5"
GPT = "gpt-4o-2024-08-06"  # priced by the built-in prefix "gpt-4o"
# In every turn of conversation(), so a test can tell that none of its text was stored or logged.
MARKER = "PRIVATE-CONVERSATION-TEXT"


def turn_text(n: int) -> str:
    topic = ["the deployment plan", "the database migration", "the billing export", "the cache layout"][n % 4]
    return (
        f"{MARKER} message {n}: let us talk about {topic}. We compared three options, measured each "
        f"one twice and wrote down why the second option was kept for step {n}. "
    ) * 3


def conversation(length: int) -> list[dict[str, Any]]:
    """A conversation of `length` alternating messages, starting and ending with the user."""
    return [{"role": "user" if n % 2 == 0 else "assistant", "content": turn_text(n)} for n in range(length)]


async def post_messages(http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]]) -> None:
    """One Anthropic messages call with this history; it must succeed."""
    body = {"model": "claude-fake-1", "max_tokens": 16, "messages": messages}
    async with http.post(url + "/v1/messages", json=body, headers=ANTHROPIC_HEADERS) as response:
        assert response.status == 200, await response.text()
        await response.read()


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/health") as response:
        result: dict[str, Any] = await response.json()
        return result


def audit_events(database: str | Path, session_id: str) -> list[str]:
    """A session's audit events, oldest first."""
    rows = query(database, "SELECT event FROM audit WHERE session_id = ? ORDER BY id", (session_id,))
    return [row["event"] for row in rows]


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """configure_logging replaces the root handlers: pytest's are put back and ours closed after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("aiohttp.access").level
    saved = structlog.get_config()
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("aiohttp.access").setLevel(access_level)
        structlog.configure(**saved)


@contextlib.contextmanager
def json_logs(path: Path) -> Iterator[Path]:
    """The proxy's production logging (proxy.logs) into a JSON-lines file; the previous setup restored."""
    with logging_restored():
        configure_logging(
            LoggingConfig(level="debug", file=str(path), max_bytes=1 << 30, backup_count=1), console=False
        )
        # Uncached: a logger first used here must follow whatever configuration later tests install.
        structlog.configure(cache_logger_on_first_use=False)
        yield path


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines logged so far, handlers flushed first."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
