"""Test support: the few calls tests make to a running proxy and the audit trail they read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ANTHROPIC_KEY
from tests.databases import query

ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}


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
