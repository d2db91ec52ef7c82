"""Reads: /metrics.json numbers and shape, totals, session restore, and the savings views, on both
engines (the `database` fixture runs each test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.records import MemoryRow, RequestRecord, SessionRecord, Usage
from proxy.storage import Store, open_store
from tests.databases import query

NOW = 1_767_225_630.0  # 2026-01-01 00:00:30 UTC
MINUTE = int(NOW // 60) * 60

AGG_KEYS = {
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "tokens_original_est",
    "tokens_forwarded_est",
    "tokens_saved",
    "savings_pct",
    "cost_usd",
    "cost_saved_usd",
    "unpriced_requests",
    "avg_duration_ms",
    "avg_overhead_ms",
}


def record(
    rid: str, at: float, provider: str, model: str | None, session: str | None, **fields: Any
) -> RequestRecord:
    endpoint = "messages" if provider == "anthropic" else "chat_completions"
    return RequestRecord(
        id=rid,
        created_at=at,
        provider=provider,
        endpoint=endpoint,
        method="POST",
        path="/v1/x",
        session_id=session,
        tenant="t1",
        model=model,
        status=fields.pop("status", 200),
        **fields,
    )


@pytest.fixture
async def db(database: str) -> AsyncIterator[Store]:
    """A store on a database with a known set of requests, sessions, snapshots and memories."""
    writer = open_store(database, flush_interval=10)
    await writer.start()
    writer.upsert_session(SessionRecord("s1", "t1", NOW - 3000, NOW - 100, messages=14))
    writer.upsert_session(SessionRecord("s2", "t1", NOW - 2000, NOW - 50, messages=3))
    writer.upsert_session(
        SessionRecord("old", "t2", NOW - 9000, NOW - 8000, messages=1, expired_at=NOW - 4000)
    )
    # s1: two compressed Anthropic calls, 30 and 2 minutes ago.
    writer.add_request(
        record(
            "a1",
            NOW - 1800,
            "anthropic",
            "claude-sonnet-4-5",
            "s1",
            usage=Usage(1000, 200, 5000, 100),
            tokens_original_est=10000,
            tokens_forwarded_est=6000,
            tokens_saved=4000,
            cost_usd=0.01,
            cost_saved_usd=0.012,
            duration_ms=900.0,
            overhead_ms=2.0,
        )
    )
    writer.add_request(
        record(
            "a2",
            NOW - 120,
            "anthropic",
            "claude-sonnet-4-5",
            "s1",
            usage=Usage(500, 100, 0, 0),
            tokens_original_est=2000,
            tokens_forwarded_est=2000,
            tokens_saved=0,
            cost_usd=0.003,
            cost_saved_usd=0.0,
            duration_ms=300.0,
            overhead_ms=1.0,
        )
    )
    # s2: an OpenAI call for an unpriced model, and an upstream error, both this minute.
    writer.add_request(
        record(
            "o1",
            NOW - 10,
            "openai",
            "mystery-model",
            "s2",
            usage=Usage(300, 50),
            tokens_original_est=400,
            tokens_forwarded_est=400,
            tokens_saved=0,
        )
    )
    writer.add_request(
        record("o2", NOW - 5, "openai", "gpt-4o", "s2", status=502, error="upstream unreachable")
    )
    # Two hours ago: counted in totals, outside the per-minute window.
    writer.add_request(
        record("x1", NOW - 7200, "anthropic", "claude-haiku-4-5", None, usage=Usage(10, 10), cost_usd=0.00006)
    )
    writer.add_snapshot("s1", '{"v": 1}', NOW - 200)
    writer.add_snapshot("s1", '{"v": 2}', NOW - 100)
    writer.add_memories(
        [
            MemoryRow("s1", 3, "assistant", "turn", 0.5, "later", "b" * 64, NOW - 200),
            MemoryRow("s1", 0, "user", "digest", 0.9, "first", "a" * 64, NOW - 300),
        ]
    )
    await writer.close()
    reads = open_store(database)
    yield reads
    await reads.close()


async def test_metrics_json_totals(db: Store) -> None:
    result = await db.metrics_json(now=NOW)
    assert set(result) == {
        "generated_at",
        "totals",
        "by_provider",
        "by_model",
        "by_tag",
        "top_sessions",
        "recent_requests",
        "per_minute",
    }
    assert result["generated_at"] == NOW
    t = result["totals"]
    assert set(t) == AGG_KEYS | {"sessions", "active_sessions"}
    assert t == {
        "requests": 5,
        "errors": 1,
        "input_tokens": 1810,
        "output_tokens": 360,
        "cache_read_tokens": 5000,
        "cache_write_tokens": 100,
        "tokens_original_est": 12400,
        "tokens_forwarded_est": 8400,
        "tokens_saved": 4000,
        "savings_pct": 32.26,
        "cost_usd": 0.01306,
        "cost_saved_usd": 0.012,
        "unpriced_requests": 1,
        "avg_duration_ms": 600.0,
        "avg_overhead_ms": 1.5,
        "sessions": 3,
        "active_sessions": 2,
    }
    assert await db.totals() == t


async def test_metrics_json_groups(db: Store) -> None:
    result = await db.metrics_json(now=NOW)
    providers = {p["provider"]: p for p in result["by_provider"]}
    assert [p["provider"] for p in result["by_provider"]] == ["anthropic", "openai"]
    assert providers["anthropic"]["requests"] == 3
    assert providers["openai"]["errors"] == 1 and providers["openai"]["unpriced_requests"] == 1
    models = [(m["provider"], m["model"], m["requests"], m["cost_usd"]) for m in result["by_model"]]
    assert models == [
        ("anthropic", "claude-sonnet-4-5", 2, 0.013),
        ("anthropic", "claude-haiku-4-5", 1, 0.00006),
        ("openai", "gpt-4o", 1, 0.0),
        ("openai", "mystery-model", 1, 0.0),
    ]
    assert all(set(m) == AGG_KEYS | {"provider", "model"} for m in result["by_model"])


async def test_metrics_json_sessions_and_recent_requests(db: Store) -> None:
    result = await db.metrics_json(now=NOW)
    top = result["top_sessions"]
    assert [s["id"] for s in top][:1] == ["s1"]
    assert top[0]["tokens_saved"] == 4000 and top[0]["requests"] == 2
    assert top[0]["savings_pct"] == pytest.approx(33.33)
    assert top[0]["cost_usd"] == pytest.approx(0.013)
    recent = result["recent_requests"]
    assert [r["id"] for r in recent] == ["o2", "o1", "a2", "a1", "x1"]
    assert recent[0]["error"] == "upstream unreachable" and recent[0]["stream"] is False
    assert recent[1]["cost_usd"] is None


async def test_per_minute_is_sixty_zero_filled_minutes(db: Store) -> None:
    series = (await db.metrics_json(now=NOW))["per_minute"]
    assert len(series) == 60
    assert [p["minute"] for p in series] == list(range(MINUTE - 59 * 60, MINUTE + 60, 60))
    assert all(set(p) == AGG_KEYS | {"minute"} for p in series)
    busy = {p["minute"]: p["requests"] for p in series if p["requests"]}
    # a1 (30 min ago), a2 (2 min ago), o1 and o2 (this minute); x1 is two hours old.
    assert busy == {int((NOW - 1800) // 60) * 60: 1, int((NOW - 120) // 60) * 60: 1, MINUTE: 2}
    assert series[-1]["errors"] == 1
    assert series[0] == {**series[0], "requests": 0, "cost_usd": 0.0, "avg_duration_ms": None}


async def test_metrics_json_of_an_empty_database(database: str) -> None:
    writer = open_store(database, flush_interval=1)
    await writer.start()
    result = await writer.metrics_json(now=NOW)
    await writer.close()
    assert result["totals"]["requests"] == 0 and result["totals"]["savings_pct"] == 0.0
    assert result["by_provider"] == result["top_sessions"] == result["recent_requests"] == []
    assert len(result["per_minute"]) == 60


async def test_recent_requests_are_capped_at_fifty(database: str) -> None:
    writer = open_store(database, flush_interval=10)
    await writer.start()
    for i in range(55):
        writer.add_request(record(f"r{i:02d}", NOW - 100 + i, "openai", "gpt-4o", None))
    await writer.close()
    recent = (await writer.metrics_json(now=NOW))["recent_requests"]
    assert len(recent) == 50 and recent[0]["id"] == "r54" and recent[-1]["id"] == "r05"


async def test_active_sessions_come_with_their_latest_snapshot(db: Store) -> None:
    active = await db.active_sessions()
    assert [(a.session.id, a.state, a.snapshot_at) for a in active] == [
        ("s1", '{"v": 2}', NOW - 100),
        ("s2", None, None),
    ]
    assert active[0].session == SessionRecord("s1", "t1", NOW - 3000, NOW - 100, messages=14)
    assert [a.session.id for a in await db.active_sessions(since=NOW - 60)] == ["s2"]


async def test_session_memories_in_conversation_order(db: Store) -> None:
    memories = await db.session_memories("s1")
    assert [(m.position, m.kind, m.content) for m in memories] == [
        (0, "digest", "first"),
        (3, "turn", "later"),
    ]
    assert await db.session_memories("nobody") == []


async def test_savings_views(db: Store, database: str) -> None:
    days = query(database, "SELECT * FROM savings_by_day")
    # UTC days: NOW is 30 s into 2026, so the two OpenAI calls fall on the new day.
    assert [(d["day"], d["requests"]) for d in days] == [("2025-12-31", 3), ("2026-01-01", 2)]
    assert days[0]["tokens_saved"] == 4000 and days[0]["savings_pct"] == 33.33
    assert days[0]["cost_usd"] == 0.01306 and days[0]["unpriced"] == 0
    assert days[1]["unpriced"] == 1 and days[1]["savings_pct"] == 0.0

    models = query(database, "SELECT * FROM savings_by_model")
    assert models[0]["model"] == "claude-sonnet-4-5" and models[0]["savings_pct"] == 33.33
    assert {m["model"]: m["requests"] for m in models} == {
        "claude-sonnet-4-5": 2,
        "claude-haiku-4-5": 1,
        "gpt-4o": 1,
        "mystery-model": 1,
    }

    sessions = {s["session_id"]: s for s in query(database, "SELECT * FROM savings_by_session")}
    assert set(sessions) == {"s1", "s2", "old"}
    assert sessions["s1"]["started"] == "2025-12-31 23:10:30"
    assert sessions["s1"]["tokens_saved"] == 4000 and sessions["s1"]["expired"] is None
    assert sessions["old"]["expired"] is not None
    assert sessions["s2"]["cost_usd"] is None  # only an unpriced model and an error


def test_a_failed_read_leaves_no_thread_to_report_to_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal UI polls a database the proxy may not have created yet, and Ctrl-C closes its
    loop at once: a failed open must not print a thread's "Event loop is closed" afterwards."""
    missing = str(tmp_path / "not-created-yet.db")
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    for _ in range(50):  # before the fix, about 6 in 10 runs left such a thread
        with pytest.raises(sqlite3.OperationalError):
            asyncio.run(open_store(missing).metrics_json(now=NOW))
    time.sleep(0.2)  # any thread left behind finishes by now
    assert failures == []
