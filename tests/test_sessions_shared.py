"""Sessions that belong to no instance: two proxies on one database (a SQLite file, then PostgreSQL)
serve turns of the same conversation; expiry follows the shared last_seen_at, never one's clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.sessions import SessionRegistry
from proxy.storage import open_store
from tests.conftest import ProxyFactory
from tests.databases import query, request, wait_rows
from tests.fake_upstream import FakeUpstream
from tests.proxy_calls import audit_events, health, post_messages

FLUSH = "0.05"
# min_tokens 0: a conversation of threshold_messages or more is folded.
COMPRESSING = {"compression_min_tokens": "0", "storage_flush_interval": FLUSH}


def conversation(length: int) -> list[dict[str, Any]]:
    return [
        {
            "role": "user" if n % 2 == 0 else "assistant",
            "content": f"Turn {n}: we compared three storage layouts, measured each twice and kept the "
            f"second for step {n}, because its writes batch better under load. " * 3,
        }
        for n in range(length)
    ]


async def test_any_instance_serves_any_turn_and_forwards_the_same_prefix(
    make_proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    fake_upstream: FakeUpstream,
    database: str,
    tmp_path: Path,
) -> None:
    first = await make_proxy(storage_database=database, **COMPRESSING)
    second = await make_proxy(storage_database=database, **COMPRESSING)
    alone = await make_proxy(storage_database=str(tmp_path / "alone.db"), **COMPRESSING)
    chat = conversation(30)
    await post_messages(http, first, chat)
    await post_messages(http, alone, chat)
    [row] = await wait_rows(database, "SELECT session_id FROM requests")
    session_id = row["session_id"]
    # The next turn lands on the other instance, which has never seen the conversation.
    chat += [{"role": "assistant", "content": "Noted."}, {"role": "user", "content": "And the next step?"}]
    await post_messages(http, second, chat)
    await post_messages(http, alone, chat)
    sent = [r.json for r in fake_upstream.requests]
    assert sent[2] == sent[3]  # byte for byte what a single proxy that saw every turn forwards
    assert sent[2]["messages"] != chat  # folded, not passed through
    await wait_rows(database, "SELECT * FROM requests WHERE session_id = ?", (session_id,), count=2)
    await wait_rows(database, "SELECT * FROM audit WHERE event = 'compressed'", count=2)
    # Found in the database on its first request there: resumed, not created a second time.
    assert audit_events(database, session_id) == ["created", "compressed", "restored", "compressed"]
    [session] = query(
        database, "SELECT requests, messages, expired_at FROM sessions WHERE id = ?", (session_id,)
    )
    assert session == {"requests": 2, "messages": 32, "expired_at": None}


async def test_one_instance_never_expires_a_session_another_is_serving(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, database: str
) -> None:
    settings = {"storage_database": database, "sessions_timeout": "2", "storage_flush_interval": FLUSH}
    first = await make_proxy(**settings)
    second = await make_proxy(**settings)
    chat = [{"role": "user", "content": "Which layout did we keep?"}]
    await post_messages(http, first, chat)
    [row] = await wait_rows(database, "SELECT session_id FROM requests")
    session_id = row["session_id"]
    # The conversation moves to the second instance for longer than the timeout; the first one's
    # expiry (every 0.5 s) keeps looking at a session it has not served since.
    until = time.monotonic() + 4.0
    while time.monotonic() < until:
        await post_messages(http, second, chat)
        assert query(database, "SELECT id FROM sessions WHERE expired_at IS NOT NULL") == []
        await asyncio.sleep(0.3)
    assert "expired" not in audit_events(database, session_id)
    # The first instance let its idle copy go; the second still holds it.
    assert (await health(http, first))["active_sessions"] == 0
    assert (await health(http, second))["active_sessions"] == 1
    # Nobody serves it any more: expired once, by whichever instance saw it first.
    await wait_rows(database, "SELECT * FROM audit WHERE event = 'expired'", within=6.0)
    await asyncio.sleep(1.0)  # both instances' expiry ran again meanwhile
    assert audit_events(database, session_id).count("expired") == 1
    [session] = query(database, "SELECT requests, expired_at, last_seen_at FROM sessions")
    assert session["requests"] >= 10 and session["expired_at"] >= session["last_seen_at"] + 2
    assert (await health(http, second))["active_sessions"] == 0


async def test_nothing_is_restored_at_startup_and_a_session_comes_back_on_its_next_request(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, database: str
) -> None:
    first = await make_proxy(storage_database=database, **COMPRESSING)
    await post_messages(http, first, conversation(30))
    [row] = await wait_rows(database, "SELECT session_id FROM requests")
    # A new instance on the same database holds no session until one of its requests arrives.
    second = await make_proxy(storage_database=database, **COMPRESSING)
    state = await health(http, second)
    assert state["active_sessions"] == 0 and state["totals"]["active_sessions"] == 1
    assert query(database, "SELECT * FROM audit WHERE event = 'restored'") == []
    await post_messages(http, second, conversation(30))
    assert (await health(http, second))["active_sessions"] == 1
    await wait_rows(database, "SELECT * FROM audit WHERE event = 'restored'")
    assert audit_events(database, row["session_id"]).count("created") == 1


async def test_the_previous_request_is_the_fleets_not_this_instances(database: str) -> None:
    """Whether the provider's cache is warm depends on when the conversation's previous request was,
    on whichever instance: an instance that has not seen it for a while asks the database."""
    stores = [open_store(database, flush_interval=30) for _ in range(2)]
    for store in stores:
        await store.start()
    here, there = (SessionRegistry(store, timeout=3600, max_active=10) for store in stores)
    start = time.time() - 1000
    first = await here.touch("conv", "tenant", 1, now=start)
    assert first.previous_request_at is None
    assert await stores[0].flush()
    elsewhere = await there.touch("conv", "tenant", 3, now=start + 400)
    assert elsewhere.previous_request_at == start  # read from the database on its first request there
    stores[1].add_request(request("req-1", session="conv", at=start + 400))
    assert await stores[1].flush()
    back = await here.touch("conv", "tenant", 5, now=start + 500)
    assert back.previous_request_at == start + 400  # not start: the other instance served it since
    soon = await here.touch("conv", "tenant", 7, now=start + 510)
    assert soon.previous_request_at == start + 500  # seen here moments ago: no read
    for store in stores:
        await store.close()
