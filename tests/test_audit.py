"""Audit trail: what the proxy decided about a conversation, across turns and restarts, in `audit`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from proxy.app import create_app, start_server
from proxy.config import Config, LoggingConfig, load_config
from proxy.logs import configure_logging
from tests.conftest import ANTHROPIC_KEY, CLIENT_TIMEOUT
from tests.fake_upstream import FakeUpstream
from tests.proxy_calls import MARKER, conversation, turn_text

HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
COMPRESSED_DETAIL = {
    "messages_folded",
    "messages_before",
    "messages_after",
    "tokens_before_est",
    "tokens_after_est",
    "cache_warm",
    "digests",
}

# The README's answer to "what did the proxy do to this conversation?" (kept true by test_readme_query).
README_QUERY = """
SELECT strftime('%Y-%m-%d %H:%M:%S', created_at, 'unixepoch') AS at_utc,
       event,
       json_extract(detail, '$.messages_before') || ' -> ' || json_extract(detail, '$.messages_after')
                                                          AS messages,
       json_extract(detail, '$.tokens_before_est') || ' -> ' || json_extract(detail, '$.tokens_after_est')
                                                          AS tokens_est,
       detail
FROM audit
WHERE session_id = :session
ORDER BY id;
"""


class Proxy:
    """The real proxy on a loopback port, started and stopped on one database like a restarted process."""

    def __init__(self, fake: FakeUpstream, tmp_path: Path) -> None:
        self.fake, self.tmp_path = fake, tmp_path
        self.database = tmp_path / "vidurai.db"
        self.runner: web.AppRunner | None = None
        self.url = ""

    def config(self, **overrides: str) -> Config:
        return load_config(
            path=self.tmp_path / "absent.ini",
            env={},
            upstream_anthropic_base_url=self.fake.anthropic_base_url,
            upstream_openai_base_url=self.fake.openai_base_url,
            storage_database=str(self.database),
            compression_min_tokens="0",
            **overrides,
        )

    async def start(self, **overrides: str) -> None:
        assert self.runner is None
        self.runner, port = await start_server(create_app(self.config(**overrides)), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """A clean stop: the writer flushes and active sessions are snapshotted."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    def audit(self, session_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with sqlite3.connect(self.database) as conn:
            sql = "SELECT session_id, event, detail FROM audit ORDER BY id"
            rows = conn.execute(sql).fetchall()
        conn.close()
        return [
            (event, json.loads(detail))
            for sid, event, detail in rows
            if session_id is None or sid == session_id
        ]

    def session_ids(self) -> list[str]:
        with sqlite3.connect(self.database) as conn:
            rows = conn.execute("SELECT DISTINCT session_id FROM requests WHERE session_id IS NOT NULL")
            ids = [row[0] for row in rows]
        conn.close()
        return ids


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Proxy]:
    running = Proxy(fake_upstream, tmp_path)
    try:
        yield running
    finally:
        await running.stop()


async def send(http: aiohttp.ClientSession, proxy: Proxy, messages: list[dict[str, Any]]) -> None:
    """One turn; the reply and the next user message are appended to `messages`."""
    body = {"model": "claude-fake-1", "max_tokens": 64, "messages": messages}
    async with http.post(proxy.url + "/v1/messages", json=body, headers=HEADERS) as response:
        assert response.status == 200, await response.text()
        reply = await response.json()
    messages.append({"role": "assistant", "content": reply["content"]})
    messages.append({"role": "user", "content": turn_text(len(messages))})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        yield session


async def test_compressed_conversation_and_restart(
    proxy: Proxy, http: aiohttp.ClientSession, fake_upstream: FakeUpstream
) -> None:
    messages = conversation(30)
    await proxy.start()
    for _ in range(3):
        await send(http, proxy, messages)
    await proxy.stop()
    await proxy.start()  # same database: the session comes back from its snapshot
    await send(http, proxy, messages)
    await proxy.stop()

    [session_id] = proxy.session_ids()
    rows = proxy.audit(session_id)
    events = [event for event, _ in rows]
    assert events == ["created", "compressed", "compressed", "compressed", "restored", "compressed"]
    assert rows[4][1] == {"from_snapshot": True}

    compressed = [detail for event, detail in rows if event == "compressed"]
    sent = [r.json for r in fake_upstream.requests]
    assert [d["messages_before"] for d in compressed] == [30, 32, 34, 36]
    for detail, forwarded in zip(compressed, sent, strict=True):
        assert set(detail) == COMPRESSED_DETAIL
        assert detail["digests"] and set(detail["digests"]) == {"extractive"}  # the default summarizer
        assert detail["messages_after"] == len(forwarded["messages"]) < detail["messages_before"]
        assert 0 < detail["messages_folded"] <= detail["messages_before"] - detail["messages_after"] + 1
        assert 0 < detail["tokens_after_est"] < detail["tokens_before_est"]

    # The audit agrees with the per-request rows the dashboards read, token estimates included.
    with sqlite3.connect(proxy.database) as conn:
        requests = conn.execute(
            "SELECT messages_original, messages_forwarded, tokens_original_est, tokens_forwarded_est "
            "FROM requests ORDER BY created_at"
        ).fetchall()
    conn.close()
    assert requests == [
        (d["messages_before"], d["messages_after"], d["tokens_before_est"], d["tokens_after_est"])
        for d in compressed
    ]
    # What the proxy decided, never what was said.
    assert all(MARKER not in json.dumps(detail) for _, detail in proxy.audit())


async def test_a_second_conversation_gets_its_own_rows(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    await proxy.start()
    first, second = conversation(30), conversation(30)
    second[0] = {"role": "user", "content": "a different beginning " + turn_text(99)}
    await send(http, proxy, first)
    await send(http, proxy, second)
    await proxy.stop()
    ids = proxy.session_ids()
    assert len(ids) == 2
    for session_id in ids:
        assert [event for event, _ in proxy.audit(session_id)] == ["created", "compressed"]


async def test_expired_while_running(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    await proxy.start(sessions_timeout="1")
    await send(http, proxy, conversation(30))
    [session_id] = proxy.session_ids() or await _wait_for_session(proxy)
    for _ in range(50):  # the maintenance task checks a few times a second; the writer commits within 0.5 s
        if "expired" in [event for event, _ in proxy.audit(session_id)]:
            break
        await asyncio.sleep(0.1)
    await proxy.stop()
    rows = proxy.audit(session_id)
    assert [event for event, _ in rows] == ["created", "compressed", "expired"]
    assert rows[-1][1]["idle_s"] >= 1
    with sqlite3.connect(proxy.database) as conn:
        (expired_at,) = conn.execute("SELECT expired_at FROM sessions WHERE id = ?", (session_id,)).fetchone()
    conn.close()
    assert expired_at is not None


async def test_expired_while_the_proxy_was_down(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    await proxy.start()
    await send(http, proxy, conversation(30))
    await proxy.stop()
    await asyncio.sleep(1.2)
    await proxy.start(sessions_timeout="1")  # idle longer than the timeout: expired, not restored
    await proxy.stop()
    [session_id] = proxy.session_ids()
    rows = proxy.audit(session_id)
    assert [event for event, _ in rows] == ["created", "compressed", "expired"]
    assert rows[-1][1]["idle_s"] >= 1


async def test_failed_open_records_the_reason_not_the_content(
    proxy: Proxy, http: aiohttp.ClientSession
) -> None:
    await proxy.start()
    messages: list[Any] = [*conversation(11), f"{MARKER} not a message object"]
    body = {"model": "claude-fake-1", "max_tokens": 16, "messages": messages}
    async with http.post(proxy.url + "/v1/messages", json=body, headers=HEADERS) as response:
        assert response.status == 200  # forwarded unchanged: the upstream judges the request
        await response.read()
    await proxy.stop()
    [session_id] = proxy.session_ids()
    rows = proxy.audit(session_id)
    assert [event for event, _ in rows] == ["created", "compression_failed_open"]
    detail = rows[1][1]
    assert set(detail) == {"reason"}
    assert re.fullmatch(r"(failed_open|invalid|input):[A-Za-z_]+", detail["reason"])
    assert MARKER not in json.dumps(detail)


async def test_readme_query(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    await proxy.start()
    messages = conversation(30)
    await send(http, proxy, messages)
    await send(http, proxy, messages)
    await proxy.stop()
    [session_id] = proxy.session_ids()
    with sqlite3.connect(proxy.database) as conn:
        rows = conn.execute(README_QUERY, {"session": session_id}).fetchall()
    conn.close()
    assert [row[1] for row in rows] == ["created", "compressed", "compressed"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0][0])
    assert rows[0][2] is None and rows[1][2].startswith("30 -> ") and rows[2][2].startswith("32 -> ")
    before, after = (int(n) for n in rows[1][3].split(" -> "))
    assert after < before


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The proxy's JSON-lines log in tmp_path; pytest's handlers are put back afterwards."""
    root = logging.getLogger()
    handlers, level, saved = list(root.handlers), root.level, structlog.get_config()
    path = tmp_path / "proxy.log"
    configure_logging(
        LoggingConfig(level="info", file=str(path), max_bytes=10_000_000, backup_count=1), console=False
    )
    structlog.configure(cache_logger_on_first_use=False)  # see tests/test_logging.py setup_logging
    yield path
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(**saved)


async def test_each_audit_row_is_also_a_log_event(
    proxy: Proxy, http: aiohttp.ClientSession, log_file: Path
) -> None:
    """Contract proposed to the lead: Writer.add_audit logs `audit` with audit=<event>, session_id, detail."""
    messages = conversation(30)
    await proxy.start()
    await send(http, proxy, messages)
    await proxy.stop()
    await proxy.start()
    await send(http, proxy, messages)
    await proxy.stop()
    text = read_text(log_file)
    lines = [json.loads(line) for line in text.splitlines()]
    logged = [(line["session_id"], line["audit"]) for line in lines if line["event"] == "audit"]
    [session_id] = proxy.session_ids()
    assert logged == [(session_id, event) for event, _ in proxy.audit()]
    assert MARKER not in text


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def _wait_for_session(proxy: Proxy) -> list[str]:
    """The writer commits within flush_interval; wait for the first request row."""
    for _ in range(50):
        if ids := proxy.session_ids():
            return ids
        await asyncio.sleep(0.1)
    return []
