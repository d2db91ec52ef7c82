"""Bounded session memory: at most [sessions] max_active memories in RAM, the rest back from the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from proxy.app import create_app, start_server
from proxy.config import load_config
from proxy.sessions import RECORDS_PER_ACTIVE
from tests.conftest import ProxyFactory
from tests.databases import query, wait_rows
from tests.fake_upstream import FakeUpstream
from tests.proxy_calls import FLUSH_INTERVAL, audit_events, conversation, health, post_messages

# min_tokens 0: every conversation of at least threshold_messages is folded.
COMPRESSING = {"compression_min_tokens": "0", "storage_flush_interval": FLUSH_INTERVAL}


def topic_conversation(topic: str, length: int) -> list[dict[str, Any]]:
    """A conversation whose first message (and so session) is its own."""
    messages = conversation(length)
    messages[0] = {"role": "user", "content": f"About {topic}: " + str(messages[0]["content"])}
    return messages


async def test_short_conversations_hold_no_memory(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(**COMPRESSING)
    for n in range(5):
        await post_messages(http, url, [{"role": "user", "content": f"question {n}"}])
    state = await health(http, url)
    assert state["active_sessions"] == 5 and state["sessions_in_memory"] == 0
    await post_messages(http, url, topic_conversation("memory", 30))
    assert (await health(http, url))["sessions_in_memory"] == 1


async def test_least_recently_used_is_evicted_and_resumes_with_the_same_prefix(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    bounded = await make_proxy(sessions_max_active="2", **COMPRESSING)
    db = tmp_path / "vidurai.db"
    chats = {topic: topic_conversation(topic, 30) for topic in ("apples", "boats", "clocks")}
    for messages in chats.values():
        await post_messages(http, bounded, messages)
    rows = await wait_rows(db, "SELECT session_id FROM requests ORDER BY created_at", count=3)
    ids = [row["session_id"] for row in rows]
    apples = ids[0]
    # Three memories for two slots: the least recently used, apples, was snapshotted and released.
    await wait_rows(db, "SELECT * FROM audit WHERE event = 'evicted' AND session_id = ?", (apples,))
    assert query(db, "SELECT session_id FROM snapshots") == [{"session_id": apples}]
    state = await health(http, bounded)
    assert state["active_sessions"] == 3 and state["sessions_in_memory"] == 2

    # Its next turn reloads the memory from the snapshot and forwards what a proxy that never
    # evicted it forwards.
    chats["apples"] += [{"role": "assistant", "content": "Noted."}, {"role": "user", "content": "And then?"}]
    await post_messages(http, bounded, chats["apples"])
    resumed = await wait_rows(
        db, "SELECT detail FROM audit WHERE event = 'resumed' AND session_id = ?", (apples,)
    )
    assert json.loads(resumed[0]["detail"]) == {"from_snapshot": True}
    await wait_rows(
        db, "SELECT * FROM audit WHERE event = 'compressed' AND session_id = ?", (apples,), count=2
    )
    assert audit_events(db, apples) == ["created", "compressed", "evicted", "resumed", "compressed"]
    # Its return pushed out the least recently used of the others.
    await wait_rows(db, "SELECT * FROM audit WHERE event = 'evicted' AND session_id = ?", (ids[1],))

    unbounded = await make_proxy(**COMPRESSING)
    await post_messages(http, unbounded, topic_conversation("apples", 30))
    await post_messages(http, unbounded, chats["apples"])
    sent = [r.json for r in fake_upstream.requests]
    assert sent[3] == sent[5]
    assert sent[3]["messages"] != chats["apples"]  # it was compressed, not passed through
    # Reloaded from the snapshot, the memory knew every turn: none was stored twice.
    duplicates = query(
        db,
        "SELECT content_sha, position, COUNT(*) AS n FROM memories WHERE session_id = ? "
        "GROUP BY content_sha, position HAVING n > 1",
        (apples,),
    )
    assert duplicates == []


async def test_restart_brings_sessions_back_as_records_and_memories_on_demand(
    fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    db = tmp_path / "vidurai.db"
    settings = {
        "upstream_anthropic_base_url": fake_upstream.anthropic_base_url,
        "storage_database": str(db),
        "sessions_max_active": "1",
        **COMPRESSING,
    }
    config = load_config(path=tmp_path / "absent.ini", env={}, **settings)
    runner, port = await start_server(create_app(config), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        await post_messages(http, url, topic_conversation("apples", 30))
        await post_messages(http, url, topic_conversation("boats", 30))
        await wait_rows(db, "SELECT * FROM audit WHERE event = 'evicted'")
    finally:
        await runner.cleanup()  # snapshots the memory still held
    assert len(query(db, "SELECT DISTINCT session_id FROM snapshots")) == 2

    runner, port = await start_server(create_app(config), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        state = await health(http, url)
        # None restored at startup: each comes back on its own next request.
        assert state["active_sessions"] == 0 and state["sessions_in_memory"] == 0
        await post_messages(http, url, topic_conversation("apples", 30))
        state = await health(http, url)
        assert state["active_sessions"] == 1 and state["sessions_in_memory"] == 1
    finally:
        await runner.cleanup()
    restored = query(db, "SELECT detail FROM audit WHERE event = 'restored'")
    assert [json.loads(r["detail"]) for r in restored] == [{"from_snapshot": True}]


async def test_records_past_their_bound_are_forgotten_here_least_recently_seen_first(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(sessions_max_active="1", **COMPRESSING)
    kept = 1 * RECORDS_PER_ACTIVE
    for n in range(kept + 2):
        await post_messages(http, url, [{"role": "user", "content": f"question {n}"}])
    assert (await health(http, url))["active_sessions"] == kept
    db = tmp_path / "vidurai.db"
    rows = await wait_rows(db, "SELECT session_id FROM requests ORDER BY created_at", count=kept + 2)
    first = rows[0]["session_id"]
    # Forgotten by this process, not expired: another instance may be serving them, and their next
    # request here finds them in the database again.
    assert query(db, "SELECT id FROM sessions WHERE expired_at IS NOT NULL") == []
    await post_messages(http, url, [{"role": "user", "content": "question 0"}])
    await wait_rows(db, "SELECT * FROM audit WHERE event = 'restored' AND session_id = ?", (first,))
    assert audit_events(db, first) == ["created", "restored"]
