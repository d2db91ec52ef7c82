"""Tenants, sessions, restart, expiry and snapshots through the real proxy and its SQLite file (issue 3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from proxy.app import create_app, start_server
from proxy.config import load_config
from tests.conftest import CLIENT_TIMEOUT, anthropic_client, openai_client
from tests.databases import query, wait_rows
from tests.fake_upstream import FakeUpstream
from tests.proxy_calls import CLAUDE, FLUSH_INTERVAL, GPT, json_logs, log_lines

SYSTEM = "You are a careful assistant."
FIRST: list[Any] = [{"role": "user", "content": "Plan a trip to Lisbon."}]


@attrs.define
class Running:
    """One proxy process-in-a-test: stop() is what SIGTERM does in `python -m proxy`."""

    runner: web.AppRunner
    url: str
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()

    async def get(self, path: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(self.url + path) as response:
            assert response.status == 200
            return await response.json()


Starter = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_proxy(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Starter]:
    """Start a proxy on a given database with setting overrides; the test may stop it, else teardown does."""
    started: list[Running] = []

    async def start(db: Path, **overrides: str) -> Running:
        settings = {
            "upstream_anthropic_base_url": fake_upstream.anthropic_base_url,
            "upstream_openai_base_url": fake_upstream.openai_base_url,
            "upstream_read_timeout": "5",
            "upstream_connect_timeout": "2",
            "storage_database": str(db),
            "storage_flush_interval": FLUSH_INTERVAL,
            **overrides,
        }
        config = load_config(path=tmp_path / "absent.ini", env={}, **settings)
        runner, port = await start_server(create_app(config), "127.0.0.1", 0)
        started.append(Running(runner, f"http://127.0.0.1:{port}"))
        return started[-1]

    yield start
    for running in reversed(started):
        await running.stop()


def tenant(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def claude_turn(
    url: str,
    messages: list[Any],
    *,
    key: str = "sk-ant-session-0001",
    system: str = SYSTEM,
    headers: dict[str, str] | None = None,
) -> None:
    async with anthropic_client(url, api_key=key) as client:
        await client.messages.create(
            model=CLAUDE, max_tokens=32, system=system, messages=messages, extra_headers=headers or {}
        )


def database_bytes(db: Path) -> bytes:
    """The database file and its -wal and -shm companions, as raw bytes."""
    return b"".join(path.read_bytes() for path in sorted(db.parent.glob(db.name + "*")))


async def session_of_last_request(db: Path, count: int) -> str:
    rows = await wait_rows(db, "SELECT session_id FROM requests ORDER BY created_at", count=count)
    assert len(rows) == count
    session_id: str = rows[-1]["session_id"]
    assert session_id
    return session_id


# --- tenants -----------------------------------------------------------------------------------


async def test_tenants_isolated_and_raw_key_never_stored_or_logged(
    start_proxy: Starter, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    db = tmp_path / "vidurai.db"
    claude_keys = ["sk-ant-test-TENANT-ONE-aaaa", "sk-ant-test-TENANT-TWO-bbbb"]
    gpt_keys = ["sk-test-TENANT-ONE-cccc", "sk-test-TENANT-TWO-dddd"]
    with json_logs(tmp_path / "proxy.log") as log_file:
        proxy = await start_proxy(db)
        for claude_key, gpt_key in zip(claude_keys, gpt_keys, strict=True):
            # The identical conversation, and even the same session header, from two tenants.
            await claude_turn(proxy.url, FIRST, key=claude_key)
            await claude_turn(proxy.url, FIRST, key=claude_key, headers={"X-Vidurai-Session": "shared-name"})
            async with openai_client(proxy.url + "/v1", api_key=gpt_key) as client:
                await client.chat.completions.create(
                    model=GPT, messages=[{"role": "system", "content": SYSTEM}, *FIRST]
                )
        # The same key in x-api-key instead of a bearer token: the same tenant, so the same session.
        async with aiohttp.ClientSession() as http:
            body = {"model": CLAUDE, "max_tokens": 32, "system": SYSTEM, "messages": FIRST}
            headers = {"x-api-key": claude_keys[0], "anthropic-version": "2023-06-01"}
            async with http.post(proxy.url + "/v1/messages", json=body, headers=headers) as response:
                assert response.status == 200
        rows = await wait_rows(db, "SELECT * FROM requests ORDER BY created_at", count=7)
        assert db.with_name(db.name + "-wal").stat().st_size > 0  # rows not yet checkpointed are here
        raw_files_running = database_bytes(db)
        await proxy.stop()
        lines = log_lines(log_file)
        log_text = log_file.read_bytes()
    # The upstream got the real keys (the proxy forwards them)...
    sent = [
        r.headers.get("x-api-key") or r.headers["authorization"].removeprefix("Bearer ")
        for r in fake_upstream.requests
    ]
    keys_in_order = [
        claude_keys[0],
        claude_keys[0],
        gpt_keys[0],
        claude_keys[1],
        claude_keys[1],
        gpt_keys[1],
        claude_keys[0],
    ]
    assert sent == keys_in_order
    # ...but each tenant is only the hash prefix, and no session is shared across tenants.
    assert [r["tenant"] for r in rows] == [tenant(k) for k in keys_in_order]
    session_ids = [r["session_id"] for r in rows]
    assert len(set(session_ids)) == 6 and session_ids[6] == session_ids[0], session_ids
    sessions = query(db, "SELECT id, tenant, requests FROM sessions")
    one, two = tenant(claude_keys[0]), tenant(claude_keys[1])
    # Per tenant: a fingerprint session, a header session, an OpenAI session; tenant one's fingerprint twice.
    assert sorted((s["tenant"], s["requests"]) for s in sessions) == sorted(
        [(one, 2), (one, 1), (two, 1), (two, 1), (tenant(gpt_keys[0]), 1), (tenant(gpt_keys[1]), 1)]
    )
    assert {s["id"] for s in sessions} == set(session_ids)

    raw_files_stopped = database_bytes(db)
    assert raw_files_running and raw_files_stopped
    for key in [*claude_keys, *gpt_keys]:
        secret = key.encode()
        assert secret not in raw_files_running and secret not in raw_files_stopped, key
        assert secret not in log_text, key
        assert hashlib.sha256(secret).hexdigest().encode() not in raw_files_stopped  # not even the full hash
    assert any(line["event"] == "session created" for line in lines)
    assert any(line["event"] == "request" for line in lines)


# --- which conversation ------------------------------------------------------------------------


async def test_session_header_wins_over_the_first_message(
    start_proxy: Starter, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    db = tmp_path / "vidurai.db"
    proxy = await start_proxy(db)
    header = {"X-Vidurai-Session": "project-alpha"}
    await claude_turn(proxy.url, [{"role": "user", "content": "First topic."}], headers=header)
    one = await session_of_last_request(db, 1)
    await claude_turn(
        proxy.url,
        [{"role": "user", "content": "A different opening."}],
        system="Other system.",
        headers=header,
    )
    assert await session_of_last_request(db, 2) == one
    await claude_turn(
        proxy.url,
        [{"role": "user", "content": "First topic."}],
        headers={"X-Vidurai-Session": "project-beta"},
    )
    assert await session_of_last_request(db, 3) != one
    # Identical first message without a header: a fingerprint session, neither of the two above.
    await claude_turn(proxy.url, [{"role": "user", "content": "First topic."}])
    await session_of_last_request(db, 4)
    assert len({r["session_id"] for r in query(db, "SELECT session_id FROM requests")}) == 3
    # The header is the proxy's own: upstream never sees it.
    assert all("x-vidurai-session" not in r.headers for r in fake_upstream.requests)
    assert query(db, "SELECT requests FROM sessions WHERE id = ?", (one,)) == [{"requests": 2}]


async def test_same_fingerprint_same_session(start_proxy: Starter, tmp_path: Path) -> None:
    db = tmp_path / "vidurai.db"
    proxy = await start_proxy(db)
    await claude_turn(proxy.url, FIRST)
    one = await session_of_last_request(db, 1)
    follow_up = [
        *FIRST,
        {"role": "assistant", "content": "Sure: three days?"},
        {"role": "user", "content": "Yes, and add Sintra."},
    ]
    await claude_turn(proxy.url, follow_up)
    assert await session_of_last_request(db, 2) == one
    await claude_turn(proxy.url, FIRST, system="You are a terse assistant.")
    assert await session_of_last_request(db, 3) != one
    await claude_turn(proxy.url, [{"role": "user", "content": "Plan a trip to Porto."}])
    assert await session_of_last_request(db, 4) != one
    await wait_rows(db, "SELECT * FROM sessions WHERE id = ? AND requests = 2", (one,))
    session = query(db, "SELECT * FROM sessions WHERE id = ?", (one,))[0]
    assert session["messages"] == 3 and session["expired_at"] is None
    assert session["last_seen_at"] >= session["created_at"]
    assert len(query(db, "SELECT id FROM sessions")) == 3


# --- restart, expiry, snapshots ----------------------------------------------------------------


async def test_restart_keeps_totals_and_sessions(start_proxy: Starter, tmp_path: Path) -> None:
    db = tmp_path / "vidurai.db"
    first = await start_proxy(db)
    await claude_turn(first.url, FIRST)
    async with openai_client(first.url + "/v1") as client:
        stream = await client.chat.completions.create(model=GPT, messages=FIRST, stream=True)
        async for _ in stream:
            pass
    await session_of_last_request(db, 2)
    claude_session = query(db, "SELECT session_id FROM requests WHERE provider = ?", ("anthropic",))[0][
        "session_id"
    ]
    before = (await first.get("/metrics.json"))["totals"]
    assert (await first.get("/health"))["active_sessions"] == 2
    await first.stop()
    created_at = query(db, "SELECT created_at FROM sessions WHERE id = ?", (claude_session,))[0]["created_at"]

    second = await start_proxy(db)
    after = (await second.get("/metrics.json"))["totals"]
    assert after == before and after["requests"] == 2 and after["cost_usd"] > 0
    health = await second.get("/health")
    # Nothing is restored at startup: the database still counts both active, this process holds none
    # until a session's next request here.
    assert health["active_sessions"] == 0 and health["totals"] == before
    assert query(db, "SELECT * FROM audit WHERE event = 'restored'") == []

    await claude_turn(
        second.url,
        [
            *FIRST,
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Three days, please."},
        ],
    )
    assert await session_of_last_request(db, 3) == claude_session
    await wait_rows(db, "SELECT * FROM sessions WHERE id = ? AND requests = 2", (claude_session,))
    session = query(db, "SELECT * FROM sessions WHERE id = ?", (claude_session,))[0]
    assert session["created_at"] == created_at and session["messages"] == 3
    events = [
        r["event"]
        for r in query(db, "SELECT event FROM audit WHERE session_id = ? ORDER BY id", (claude_session,))
    ]
    assert events.count("created") == 1 and "restored" in events, events
    restored = query(db, "SELECT session_id, detail FROM audit WHERE event = 'restored'")
    # One-message conversations have nothing to fold, so no memory was made and none snapshotted.
    assert [(r["session_id"], json.loads(r["detail"])) for r in restored] == [
        (claude_session, {"from_snapshot": False})
    ]
    assert (await second.get("/health"))["active_sessions"] == 1


async def test_idle_session_expires(start_proxy: Starter, tmp_path: Path) -> None:
    db = tmp_path / "vidurai.db"
    proxy = await start_proxy(db, sessions_timeout="1")
    await claude_turn(proxy.url, FIRST)
    session_id = await session_of_last_request(db, 1)
    assert (await proxy.get("/health"))["active_sessions"] == 1
    expired = await wait_rows(
        db, "SELECT * FROM sessions WHERE id = ? AND expired_at IS NOT NULL", (session_id,), within=4.0
    )
    assert expired[0]["expired_at"] >= expired[0]["last_seen_at"] + 1
    audit = await wait_rows(
        db, "SELECT detail FROM audit WHERE session_id = ? AND event = 'expired'", (session_id,)
    )
    assert json.loads(audit[0]["detail"])["idle_s"] >= 1
    assert (await proxy.get("/health"))["active_sessions"] == 0
    assert (await proxy.get("/metrics.json"))["totals"]["active_sessions"] == 0
    # The conversation goes on: the same session comes back to life.
    await claude_turn(proxy.url, FIRST)
    assert await session_of_last_request(db, 2) == session_id
    await wait_rows(db, "SELECT * FROM sessions WHERE id = ? AND expired_at IS NULL", (session_id,))
    assert (await proxy.get("/health"))["active_sessions"] == 1


async def test_session_idle_past_timeout_while_down_is_expired_at_startup(
    start_proxy: Starter, tmp_path: Path
) -> None:
    db = tmp_path / "vidurai.db"
    first = await start_proxy(db, sessions_timeout="1")
    await claude_turn(first.url, FIRST)
    session_id = await session_of_last_request(db, 1)
    await first.stop()
    await asyncio.sleep(1.2)
    second = await start_proxy(db, sessions_timeout="1")
    assert (await second.get("/health"))["active_sessions"] == 0
    await wait_rows(db, "SELECT * FROM sessions WHERE id = ? AND expired_at IS NOT NULL", (session_id,))
    events = [
        r["event"]
        for r in query(db, "SELECT event FROM audit WHERE session_id = ? ORDER BY id", (session_id,))
    ]
    assert events == ["created", "expired"], events


async def test_snapshots_every_interval_and_on_stop(start_proxy: Starter, tmp_path: Path) -> None:
    db = tmp_path / "vidurai.db"
    # Threshold 1: even the first message is worth a memory, so there is something to snapshot.
    proxy = await start_proxy(db, sessions_snapshot_interval="1", compression_threshold_messages="1")
    await claude_turn(proxy.url, FIRST)
    session_id = await session_of_last_request(db, 1)
    periodic = await wait_rows(db, "SELECT * FROM snapshots WHERE session_id = ?", (session_id,), within=3.0)
    json.loads(periodic[0]["state"])
    await claude_turn(
        proxy.url,
        [*FIRST, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Next week."}],
    )
    await proxy.stop()
    snapshots = query(db, "SELECT * FROM snapshots WHERE session_id = ? ORDER BY id", (session_id,))
    assert snapshots[-1]["id"] > periodic[0]["id"]
    json.loads(snapshots[-1]["state"])


async def test_stop_writes_a_final_snapshot(start_proxy: Starter, tmp_path: Path) -> None:
    db = tmp_path / "vidurai.db"
    # snapshot_interval 60 s: only the stop can have written one.
    proxy = await start_proxy(db, compression_threshold_messages="1")
    await claude_turn(proxy.url, FIRST)
    session_id = await session_of_last_request(db, 1)
    await asyncio.sleep(0.2)
    assert query(db, "SELECT id FROM snapshots") == []
    await proxy.stop()
    snapshots = query(db, "SELECT session_id, state FROM snapshots")
    assert [s["session_id"] for s in snapshots] == [session_id]
    json.loads(snapshots[0]["state"])


def test_cache_markers_do_not_change_a_conversations_identity() -> None:
    from proxy.sessions import session_id_for

    def start(marked: bool, text: str = "Plan a trip.") -> dict[str, Any]:
        block: dict[str, Any] = {"type": "text", "text": text}
        if marked:
            block["cache_control"] = {"type": "ephemeral"}
        return {"system": SYSTEM, "first_user": [block]}

    plain = session_id_for("t", "anthropic", None, start(False))
    assert session_id_for("t", "anthropic", None, start(True)) == plain
    assert session_id_for("t", "anthropic", None, start(False, "Plan a trip!")) != plain
    # The marker's name inside the text itself is content, not a marker.
    assert session_id_for("t", "anthropic", None, start(False, '"cache_control"')) != plain
